"""Spinners that keep idle cores from halting (cifarnet.idle_cores): when they start, what they are
(lowest priority, a session of their own), and that none outlives the training or its parent."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cifarnet.errors import InvalidValue
from cifarnet.idle_cores import cores_halt_at_once, keep_cores_awake, wanted
from cifarnet.training.settings import TrainerSettings

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_IDLE and /proc are Linux's")


def fake_sys(tmp_path: Path, driver: str | None, poll_ns: str | None) -> Path:
    if driver is not None:
        (tmp_path / "devices/system/cpu/cpuidle").mkdir(parents=True)
        (tmp_path / "devices/system/cpu/cpuidle/current_driver").write_text(driver + "\n")
    if poll_ns is not None:
        (tmp_path / "module/haltpoll/parameters").mkdir(parents=True)
        (tmp_path / "module/haltpoll/parameters/guest_halt_poll_ns").write_text(poll_ns + "\n")
    return tmp_path


@pytest.mark.parametrize("driver, poll_ns, halts", [
    ("haltpoll", "0", True), ("haltpoll", "200000", False), ("intel_idle", None, False), (None, None, False),
    ("haltpoll", None, False), ("haltpoll", "junk", False)])
def test_cores_halt_at_once_only_under_haltpoll_without_polling(tmp_path, driver, poll_ns, halts):
    assert cores_halt_at_once(fake_sys(tmp_path, driver, poll_ns)) is halts


@linux_only
def test_spinners_are_wanted_for_split_batches_as_the_setting_says(tmp_path):
    halting, polling = fake_sys(tmp_path / "a", "haltpoll", "0"), fake_sys(tmp_path / "b", "haltpoll", "50000")
    assert wanted("auto", 2, halting) and not wanted("auto", 2, polling)
    assert wanted("always", 2, polling) and not wanted("never", 2, halting)
    assert not wanted("always", 1, halting) and not wanted("auto", 1, halting)     # one thread waits for none
    with pytest.raises(ValueError, match="keep_cores_awake must be one of auto, always, never, got 'yes'"):
        wanted("yes", 2)
    with pytest.raises(InvalidValue, match="trainer.keep_cores_awake must be one of auto, always, never"):
        TrainerSettings(keep_cores_awake="sometimes")
    assert TrainerSettings().keep_cores_awake == "never"                         # opt-in


def gone(pid: int) -> bool:
    """The process ended (absent, or a zombie nobody reaped: this machine's pid 1 may not reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def autogroup(pid) -> str | None:
    try:
        return Path(f"/proc/{pid}/autogroup").read_text().split()[0]
    except OSError:                                  # a kernel without scheduling autogroups
        return None


@linux_only
def test_spinners_run_at_idle_priority_in_their_own_group_and_stop_with_the_block():
    """Lowest priority; a process group of their own (a Ctrl-C at the terminal is not theirs) in
    this session and so this scheduling autogroup (in another, Linux would weigh them as an equal)."""
    with keep_cores_awake("always", 2, cores=2) as spinners:
        assert len(spinners) == 2
        for spinner in spinners:
            assert spinner.poll() is None
            assert os.sched_getscheduler(spinner.pid) == os.SCHED_IDLE
            assert os.getpgid(spinner.pid) == spinner.pid and os.getsid(spinner.pid) == os.getsid(0)
            assert autogroup(spinner.pid) == autogroup(os.getpid())
    assert all(spinner.poll() is not None for spinner in spinners)
    with keep_cores_awake("never", 2) as none:
        assert none == []


@linux_only
@pytest.mark.parametrize("threads, cores, count", [(2, 2, 2), (3, 2, 2), (2, 8, 2)])
def test_one_spinner_per_thread_at_most_one_per_core(threads, cores, count):
    with keep_cores_awake("always", threads, cores=cores) as spinners:
        assert len(spinners) == count


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@linux_only
def test_a_spinner_yields_its_core_to_a_busy_process():
    """A spinner and a busy process on the same core: the busy one keeps nearly all of it (at equal
    priority, or in another autogroup, the spinner would take about half)."""
    code = "import time; end = time.perf_counter() + 1.5\nwhile time.perf_counter() < end: pass"
    core = min(os.sched_getaffinity(0))
    with keep_cores_awake("always", 2, cores=1) as (spinner,):                 # one core: one spinner
        os.sched_setaffinity(spinner.pid, {core})
        busy = subprocess.Popen([sys.executable, "-c", code])
        os.sched_setaffinity(busy.pid, {core})
        before = cpu_seconds(spinner.pid)
        busy.wait(timeout=60)
        spun = cpu_seconds(spinner.pid) - before
    assert spun < 0.25, f"the spinner took {spun:.2f} s of the busy process's 1.5 s"


@linux_only
def test_a_spinner_ends_when_its_parent_is_killed():
    """The parent starts a spinner, reports its pid and is killed with SIGKILL (no clean-up runs):
    the spinner ends within seconds (PR_SET_PDEATHSIG, or its check of the parent)."""
    code = ("import os, signal, sys; from cifarnet.idle_cores import start_spinners; "
            "s = start_spinners(1)[0]; print(s.pid, flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == -9, done.stderr
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 10
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(pid)


def spinner_children() -> list[int]:
    """Pids of this process's children that are spinners (by their command line)."""
    pids = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                if b"SCHED_IDLE" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.append(int(pid))
            except FileNotFoundError:
                pass
    return pids


@linux_only
@pytest.mark.parametrize("setting, workers, expected", [("always", 2, 2), ("never", 2, 0), ("always", 1, 0)])
def test_the_trainer_keeps_cores_awake_while_it_trains_a_split_batch(tmp_path, setting, workers, expected):
    """During training (seen by a hook at each step) the trainer has one spinner per thread (here two
    threads on two cores) when the batch is split and the setting asks for it; after ``fit`` none is left."""
    from cifarnet.data import BatchLoader, Normalization, load_dataset
    from cifarnet.models import build_model, model_description
    from cifarnet.optim import SGD
    from cifarnet.training.hooks import Hook
    from cifarnet.training.trainer import Trainer

    class Children(Hook):
        seen: list[int] = []

        def log_step(self, step, lr):
            self.seen.append(len(spinner_children()))

    data = load_dataset("synthetic", train_size=64, test_size=32)
    norm = Normalization.from_images(data.train.images)
    train = BatchLoader(data.train, 32, norm, shuffle=True, drop_last=True, seed=0, prefetch=0)
    test = BatchLoader(data.test, 32, norm, prefetch=0)
    settings = TrainerSettings(epochs=1, progress=False, handle_signals=False, workers=workers,
                               keep_cores_awake=setting)
    probe = Children()
    trainer = Trainer(build_model(model_description("resnet20"), seed=0), SGD(lr=0.01), lambda s: 0.01, None,
                      train, {"test": test}, 10, tmp_path, settings, {"backend": "numpy"}, hooks=[probe])
    assert (trainer.group.size if trainer.group is not None else 1) == workers     # the batch is split so
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "sched_getaffinity", lambda _: {0, 1})         # two cores, whatever this machine has
        trainer.fit()
    assert probe.seen == [expected, expected]
    assert spinner_children() == []


def spinners_of(parent: int) -> list[int]:
    """Pids of live spinners started by ``parent`` (found by their command line, which names it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if len(argv) > 2 and b"SCHED_IDLE" in argv[-3] and argv[-2] == str(parent).encode() and \
                    not gone(int(entry.name)):
                found.append(int(entry.name))
    return found


@linux_only
@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGKILL, -9)])
def test_no_spinner_outlives_a_run_stopped_by_ctrl_c_or_killed(tmp_path, signum, code):
    """A run whose batch is split between two threads, with spinners (``always``), started as a
    terminal starts a job (a process group of its own): a Ctrl-C (SIGINT to that group, which the
    spinners are not in) stops it as usual (exit 130, a resumable checkpoint) and its spinners are
    gone; killed with SIGKILL, no clean-up runs and they end with it all the same."""
    from .cli_helpers import TINY

    run = subprocess.Popen([sys.executable, "-m", "cifarnet", *TINY, "model=resnet20", "trainer.epochs=50",
                            "trainer.workers=2", "trainer.keep_cores_awake=always", "trainer.progress=false",
                            f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(spinners_of(run.pid)) < 2 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        spinners = spinners_of(run.pid)
        assert len(spinners) == 2, run.stdout.read() if run.poll() is not None else "no spinners in 120 s"
        os.killpg(run.pid, signum)
        output = run.communicate(timeout=120)[0]
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert run.returncode == code, output
    if signum == signal.SIGINT:
        assert "resume=" in output
    deadline = time.monotonic() + 10
    while any(not gone(pid) for pid in spinners) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(gone(pid) for pid in spinners)
