"""Checkpoints: one ``.npz`` file, no pickle, written atomically, verified on load.

Layout of the archive (every entry a plain numeric or unicode array):

* ``model/<dotted name>``            parameters and batch-norm buffers (``model.state_dict()``)
* ``optim/<param name>/<state key>`` optimizer state (momentum, Adam moments)
* ``extra/<key>``                    other arrays of a run (``extra/ema/<dotted name>``: its weight average)
* ``__meta__``                        JSON text: model description, normalisation statistics, class
                                      names, epoch, step, position in the epoch, best metric,
                                      backend, dtype, cifarnet version, RNG states, optimizer
                                      hyper-parameters, the run's config and metric history
* ``__checksum__``                    SHA-256 over every other entry's name, dtype, shape and bytes

Files are written to a temporary name in the target directory, flushed to disk and renamed, so a
crash leaves either the old file or the complete new one, never a partial file under the final
name. Loading uses ``allow_pickle=False`` and recomputes the checksum.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import CifarnetError

FORMAT_VERSION = 1
log = logging.getLogger(__name__)

_NAME = re.compile(r"(?:epoch(?P<epoch>\d+)|best|interrupt_e(?P<ie>\d+)_b(?P<ib>\d+))_(?P<backend>[a-z]+)\.npz")
# The first bytes of files people pass as checkpoints by mistake, for the error message.
_SIGNATURES = ((b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG", "a PNG image"), (b"GIF8", "a GIF image"),
               (b"\x93NUMPY", "a single .npy array"), (b"\x1f\x8b", "a gzip archive"),
               (b"%PDF", "a PDF document"))


class CheckpointError(CifarnetError, RuntimeError):
    """A checkpoint that cannot be written or read; the message names the file and the cause."""


@dataclass
class Checkpoint:
    """What a checkpoint holds, on the host.

    Attributes:
        model_state: dotted name -> array, for ``model.load_state_dict``.
        optimizer_state: as ``Optimizer.state_dict()`` returns it (without hyper-parameters'
            defaults: those are in ``meta["optimizer"]``).
        meta: the JSON metadata.
        path: where it was read from.
        extras: other named arrays a run keeps (its weight average: ``ema/<name>``).
    """

    model_state: dict[str, np.ndarray]
    optimizer_state: dict[str, Any] | None
    meta: dict[str, Any]
    path: Path | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)


# -- file names: the one place that decides them -------------------------------------------------
def epoch_name(epoch: int, backend: str) -> str:
    """``epoch003_numpy.npz``: the checkpoint written after epoch ``epoch`` (1-based)."""
    return f"epoch{epoch:03d}_{backend}.npz"


def best_name(backend: str) -> str:
    """``best_numpy.npz``: the checkpoint of the best epoch so far."""
    return f"best_{backend}.npz"


def interrupt_name(epoch: int, batch: int, backend: str) -> str:
    """``interrupt_e004_b00017_numpy.npz``: written on a signal after ``batch`` batches of epoch ``epoch``."""
    return f"interrupt_e{epoch:03d}_b{batch:05d}_{backend}.npz"


def position(path: str | Path) -> tuple[int, int] | None:
    """Where training stood when the checkpoint named ``path`` was written, read from its name:
    ``(completed epochs, batches of the next epoch)``; None for a best checkpoint or a foreign name."""
    match = _NAME.fullmatch(Path(path).name)
    if match is None or match["epoch"] is None and match["ie"] is None:
        return None
    if match["epoch"] is not None:
        return int(match["epoch"]), 0
    return int(match["ie"]) - 1, int(match["ib"])


def is_best(path: str | Path) -> bool:
    match = _NAME.fullmatch(Path(path).name)
    return match is not None and match["epoch"] is None and match["ie"] is None


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def pack(model_state: dict[str, np.ndarray], optimizer_state: dict[str, Any] | None,
         meta: dict[str, Any], extras: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The archive's entries (see the module docstring), checksum included."""
    arrays: dict[str, np.ndarray] = {f"model/{k}": np.asarray(v) for k, v in model_state.items()}
    arrays.update({f"extra/{k}": np.asarray(v) for k, v in (extras or {}).items()})
    meta = dict(meta, format_version=FORMAT_VERSION, cifarnet_version=__version__)
    if optimizer_state is not None:
        for name, state in optimizer_state["state"].items():
            for key, value in state.items():
                arrays[f"optim/{name}/{key}"] = np.asarray(value)
        meta["optimizer_steps"] = int(optimizer_state["steps"])
        meta["optimizer_hyperparameters"] = optimizer_state["hyperparameters"]
    arrays["__meta__"] = np.array(json.dumps(meta, sort_keys=True))
    arrays["__checksum__"] = np.array(_digest(arrays))
    return arrays


def write_atomic(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` as an uncompressed ``.npz`` at ``path``, atomically.

    Raises:
        CheckpointError: the directory cannot be created or written (read-only, disk full, ...);
            any previous file at ``path`` is left untouched and no temporary file remains.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise CheckpointError(f"cannot write checkpoint {path}: {err.strerror or err}") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())       # mkstemp makes 0600; follow the umask as open() does
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        _before_rename(tmp, path)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise CheckpointError(f"cannot write checkpoint {path}: {err.strerror or err}; "
                                  "the previous checkpoint is unchanged") from None
        raise
    return path


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _before_rename(tmp: str, final: Path) -> None:
    """Hook between writing the temporary file and renaming it (fault-injection tests patch it)."""


def save(path: str | Path, model_state: dict[str, np.ndarray], optimizer_state: dict[str, Any] | None,
         meta: dict[str, Any]) -> Path:
    """Pack and atomically write a checkpoint; returns its path."""
    return write_atomic(path, pack(model_state, optimizer_state, meta))


def load(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint.

    Raises:
        CheckpointError: missing, truncated, not an ``.npz``, holding pickled objects, missing its
            metadata, or failing its checksum; the message names the file and the cause.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; name a checkpoint file in it, or use "
                              "resolve() to pick one from a run directory")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    _check_signature(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except ValueError as err:
        if "pickle" in str(err):
            raise CheckpointError(f"checkpoint {path} holds pickled objects; refusing to load it "
                                  "(cifarnet checkpoints never contain pickles)") from None
        raise CheckpointError(f"checkpoint {path} is unreadable: {err}") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise CheckpointError(f"checkpoint {path} failed its checksum/integrity check (truncated or "
                              f"damaged): {type(err).__name__}: {err}") from None
    if "__meta__" not in arrays or "__checksum__" not in arrays:
        raise CheckpointError(f"{path} is not a cifarnet checkpoint (no metadata or checksum entry)")
    stored = str(arrays.pop("__checksum__"))
    actual = _digest(arrays)
    if stored != actual:
        raise CheckpointError(f"checkpoint {path} failed its checksum: stored {stored[:16]}..., "
                              f"contents hash to {actual[:16]}...; the file was altered or damaged")
    meta = json.loads(str(arrays.pop("__meta__")))
    model_state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    optimizer_state = None
    if "optimizer_hyperparameters" in meta:
        state: dict[str, dict[str, np.ndarray]] = {}
        for key, value in arrays.items():
            if key.startswith("optim/"):
                name, _, slot = key[len("optim/"):].rpartition("/")
                state.setdefault(name, {})[slot] = value
        optimizer_state = {"steps": meta["optimizer_steps"], "hyperparameters": meta["optimizer_hyperparameters"],
                           "state": state}
    extras = {k[len("extra/"):]: v for k, v in arrays.items() if k.startswith("extra/")}
    return Checkpoint(model_state, optimizer_state, meta, path, extras)


def _check_signature(path: Path) -> None:
    """Refuse a file that is not a zip archive (every ``.npz`` is one), naming what it looks like."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as err:
        raise CheckpointError(f"checkpoint {path} cannot be read: {err.strerror or err}") from None
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise CheckpointError(f"checkpoint {path} holds pickled objects (it is a pickle, not an .npz "
                              "archive); refusing to load it (cifarnet checkpoints never contain pickles)")
    kind = next((what for magic, what in _SIGNATURES if head.startswith(magic)), None)
    if kind is None:
        kind = "a text file" if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head) else \
            ("an empty file" if not head else "a file of another format")
    raise CheckpointError(f"{path} is not a cifarnet checkpoint: it is {kind}, not the .npz archive "
                          "that training writes (checkpoints/epochNNN_<backend>.npz or best_<backend>.npz)")


def resolve(target: str | Path, prefer: str = "newest") -> Checkpoint:
    """Load ``target``: a checkpoint file, a run directory (or its ``checkpoints/`` folder), or
    ``pretrained:<name>`` (a checkpoint shipped with cifarnet, :mod:`cifarnet.pretrained`).

    From a directory, ``prefer="newest"`` takes the checkpoint furthest into training (by the
    epoch and batch in its name, interrupt checkpoints included: what ``resume=`` wants);
    ``prefer="best"`` takes the best checkpoint if there is one, else the newest (what evaluation
    wants). An unreadable candidate is skipped with a warning and the next one is tried.

    Raises:
        CheckpointError: nothing there, or no readable checkpoint; the message says which.
    """
    if prefer not in ("newest", "best"):
        raise ValueError(f"prefer must be 'newest' or 'best', got {prefer!r}")
    if str(target).startswith("pretrained:"):                    # shipped with the package
        from . import pretrained

        try:
            return load(pretrained.path(str(target)[len("pretrained:"):]))
        except LookupError as err:
            raise CheckpointError(str(err).strip("'\"")) from None
    target = Path(target)
    if not target.is_dir():
        return load(target)
    folder = target / "checkpoints" if (target / "checkpoints").is_dir() else target
    for tmp in remove_stale_temporaries(folder):
        log.warning("removed %s, left by an interrupted checkpoint write", tmp)
    newest_first = lambda p: (position(p), p.stat().st_mtime_ns)             # noqa: E731
    ordered = sorted((p for p in folder.glob("*.npz") if position(p) is not None), key=newest_first, reverse=True)
    if prefer == "best":
        best = sorted((p for p in folder.glob("*.npz") if is_best(p)), key=lambda p: p.stat().st_mtime_ns,
                      reverse=True)
        ordered = best + ordered
    if not ordered:
        raise CheckpointError(f"no checkpoints in {folder} (looked for epochNNN_<backend>.npz, "
                              "best_<backend>.npz and interrupt_*.npz)")
    errors = []
    for path in ordered:
        try:
            found = load(path)
        except CheckpointError as err:
            log.warning("skipping unreadable checkpoint: %s", err)
            errors.append(str(err))
            continue
        if errors:
            log.warning("falling back to the previous good checkpoint %s", path)
        return found
    raise CheckpointError(f"no readable checkpoint in {folder}: " + "; ".join(errors))


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporary files a crashed writer left in ``folder``; returns what was removed."""
    removed = []
    for tmp in Path(folder).glob(".*.npz.*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


SHIPPED_DATA = {"root": "data", "download": True}     # a shipped checkpoint names no machine's folders


def strip(source: str | Path, target: str | Path, provenance: dict[str, Any]) -> Path:
    """Write ``source``'s model (without optimizer state or run history) to ``target``, with
    ``provenance`` under ``meta["pretrained"]``: a checkpoint to ship (:mod:`cifarnet.pretrained`).

    The training machine's data location goes: the shipped config's ``data.root`` and
    ``data.download`` are the defaults (``data``, true), whatever the run had."""
    found = load(source)
    keep = ("model", "input_shape", "normalization", "class_names", "backend", "dtype", "seed")
    meta = {k: found.meta[k] for k in keep if k in found.meta}
    state = found.meta["state"]
    config = {k: found.meta["config"][k] for k in ("model", "data", "backend", "seed")}
    config["data"] = {**config["data"], **{k: v for k, v in SHIPPED_DATA.items() if k in config["data"]}}
    meta.update(state={"epoch": state["epoch"], "batch": 0, "step": state["step"]}, config=config,
                rng=found.meta.get("rng", {}), pretrained=dict(provenance))
    return save(target, found.model_state, None, meta)
