"""cifarnet.memory: large arrays come from malloc's reusable heap once asked (glibc only)."""
import subprocess
import sys

import pytest

from cifarnet.experiment import make_backend
from cifarnet.memory import keep_freed_memory

glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tunes glibc's malloc")

# mallinfo2().hblkhd is the number of bytes malloc currently holds in mmap'd blocks
PROBE = """
import ctypes, sys
import numpy as np
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    from cifarnet.memory import keep_freed_memory
    assert keep_freed_memory()
before = libc.mallinfo2().hblkhd
a = np.ones(64 << 18, dtype=np.float32)          # 64 MiB
print(libc.mallinfo2().hblkhd - before)
"""


def _mmapped_bytes_for_64_mib(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120)
    if done.returncode != 0 and "mallinfo2" in done.stderr:
        pytest.skip("this C library has no mallinfo2")
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


@glibc_only
def test_large_arrays_come_from_the_heap_once_kept():
    assert _mmapped_bytes_for_64_mib("default") >= 64 << 20      # default: a fresh mapping per array
    assert _mmapped_bytes_for_64_mib("keep") == 0                # kept: served from the reusable heap


# the arenas malloc holds after a worker thread allocated, from malloc_info's XML (one <heap> each)
ARENA_PROBE = """
import ctypes, os, sys, tempfile, threading
import numpy as np
if sys.argv[1] == "keep":
    from cifarnet.memory import keep_freed_memory
    assert keep_freed_memory()
else:                                               # the thresholds alone, as before M_ARENA_MAX
    from cifarnet.memory import KEEP_BELOW, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    libc = ctypes.CDLL("libc.so.6")
    assert libc.mallopt(M_MMAP_THRESHOLD, KEEP_BELOW) and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
worker = threading.Thread(target=lambda: np.ones(2 << 20, dtype=np.float32).sum())
worker.start()
worker.join()
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
libc.fclose.argtypes = (ctypes.c_void_p,)
path = os.path.join(tempfile.mkdtemp(), "malloc.xml")
f = libc.fopen(path.encode(), b"w")
assert libc.malloc_info(0, f) == 0
libc.fclose(f)
print(open(path).read().count("<heap nr="))
"""


def _arenas_after_a_worker_thread(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", ARENA_PROBE, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


@glibc_only
def test_worker_threads_allocate_from_the_one_arena_the_thresholds_govern():
    # a thread arena unmaps its empty heaps whatever the thresholds say: in a two-thread ResNet-32
    # step that was up to 92,000 page faults a step, all in the worker thread (cifarnet.memory)
    assert _arenas_after_a_worker_thread("thresholds") >= 2     # the worker got an arena of its own
    assert _arenas_after_a_worker_thread("keep") == 1            # every thread in the main arena


@glibc_only
def test_keep_freed_memory_is_idempotent():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True


def test_make_backend_honours_the_switch(monkeypatch):
    calls = []
    monkeypatch.setattr("cifarnet.experiment.components.keep_freed_memory", lambda: calls.append(1))
    assert make_backend({"name": "numpy", "keep_freed_memory": False}).name == "numpy"
    assert calls == []
    make_backend({"name": "numpy"})
    assert calls == [1]


def test_the_runner_sets_the_allocator_up_before_trackers_start_their_threads(tmp_path, monkeypatch):
    import cifarnet.experiment.training as runner
    from cifarnet.experiment import train

    from .cli_helpers import compose_plain

    order = []
    make_backend, make_trackers = runner.make_backend, runner.make_trackers
    monkeypatch.setattr(runner, "make_backend", lambda cfg: order.append("backend") or make_backend(cfg))
    monkeypatch.setattr(runner, "make_trackers", lambda cfg: order.append("trackers") or make_trackers(cfg))
    train(compose_plain("trainer.epochs=1", "data.train_size=64"), tmp_path)
    assert order == ["backend", "trackers"]


# resident kilobytes after keeping freed memory, freeing 256 MiB, and giving it back or not
TRIM_PROBE = """
import sys
import numpy as np
from cifarnet.memory import give_back_freed_memory, keep_freed_memory
def resident_kb():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS:")).split()[1])
assert keep_freed_memory()
a = np.ones(64 << 20, dtype=np.float32)
keep = np.ones(1, dtype=np.float32)                 # a block above it, so the heap's top is not free
del a
before = resident_kb()
if sys.argv[1] == "give":
    assert give_back_freed_memory()
print(before - resident_kb())
"""


@glibc_only
def test_freed_memory_kept_in_the_heap_goes_back_to_the_system_when_asked():
    """What a training plan's recorded first step freed leaves the process before the arena that
    replaces it is made (cifarnet.arrays.workspace)."""
    given = {}
    for mode in ("keep", "give"):
        done = subprocess.run([sys.executable, "-c", TRIM_PROBE, mode], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        given[mode] = int(done.stdout.strip())
    assert given["keep"] < 10_000 and given["give"] > 200_000       # 256 MiB freed: about 262,000 kB back
