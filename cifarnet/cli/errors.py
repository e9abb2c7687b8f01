"""Turn expected failures into one line on stderr and a non-zero exit, without a traceback.

Expected failures are cifarnet's own error types, raised where input is checked (a config key,
a file, a value: :class:`cifarnet.errors.InvalidValue` and the others in ``EXPECTED``), OS errors
on files, and Hydra's composition errors. Anything else (a ``ValueError`` from deep in NumPy, say)
is a bug: it keeps its traceback, followed by a line that says so."""
from __future__ import annotations

import os
import signal
import sys
import traceback

from ..backend import BackendUnavailable
from ..checkpoint import CheckpointError
from ..data import DataError
from ..distributed.agreement import RankMismatch
from ..distributed.launch import LaunchError
from ..errors import InvalidValue
from ..experiment import ConfigError
from ..export import ExportError
from ..models import ModelSpecError
from ..registry import UnknownNameError
from ..run_dir import RunDirectoryError
from ..tracking import TrackerError
from ..training.guard import NonFiniteError
from ..training.signals import TrainingInterrupted

# InvalidValue: the library checks arguments (batch size, val_size, rates, ...) with InvalidValue
# errors whose message names the value (a plain ValueError is a bug); CIFARNET_TRACEBACK=1 shows the
# traceback of expected errors too.
EXPECTED = (BackendUnavailable, CheckpointError, DataError, ConfigError, ModelSpecError, UnknownNameError,
            ExportError, NonFiniteError, RunDirectoryError, TrackerError, LaunchError, RankMismatch, InvalidValue)
BUG = ("cifarnet: internal error: {kind}: this is a bug in cifarnet, not a problem with your input; "
       "please report it with the traceback above")

# Hydra plugins behind cifarnet's launcher and sweeper presets: the config a preset extends, the
# preset's name, the extra that installs the plugin, and the plugin's package.
PLUGINS = {
    "hydra/launcher/joblib": ("hydra/launcher=parallel", "parallel", "hydra-joblib-launcher"),
    "hydra/launcher/submitit_local": ("hydra/launcher=local", "slurm", "hydra-submitit-launcher"),
    "hydra/launcher/submitit_slurm": ("hydra/launcher=slurm", "slurm", "hydra-submitit-launcher"),
    "hydra/launcher/ray": ("hydra/launcher=ray", "ray", "hydra-ray-launcher"),
    "hydra/sweeper/optuna": ("hydra/sweeper=search", "optuna", "hydra-optuna-sweeper"),
}


class Terminated(BaseException):
    """SIGTERM outside training (while starting up, loading data, evaluating): like Ctrl-C's
    KeyboardInterrupt, it unwinds the job so that its cleanup runs, then exits 143."""

    signum = signal.SIGTERM


def raise_terminated(signum, frame) -> None:
    """The SIGTERM handler the command line installs while no training loop has its own."""
    raise Terminated()


def one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).strip().splitlines() if part.strip())


def hydra_message(err: BaseException) -> str | None:
    """A one-line cause for Hydra's and OmegaConf's composition errors, or None if not one of them."""
    from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(err, MissingConfigException):
        missing = err.missing_cfg_file or ""
        if missing in PLUGINS:
            preset, extra, package = PLUGINS[missing]
            return (f"{preset} needs the Hydra plugin {package}, which is not installed: "
                    f"pip install 'cifarnet[{extra}]'")
        group = missing.rsplit("/", 1)[0] if missing else "config"
        name = missing.rsplit("/", 1)[-1] if missing else "?"
        known = ", ".join(err.options) if err.options else "(none)"
        return f"unknown {group} {name!r}; known: {known}"
    if isinstance(err, (ConfigCompositionException, OverrideParseException, HydraException)):
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        cause = err.__cause__
        if isinstance(cause, OmegaConfBaseException):
            return f"{first} {str(cause).strip().splitlines()[0]}"
        return one_line(first)
    if isinstance(err, OmegaConfBaseException):
        lines = str(err).strip().splitlines()
        key = next((line.split(":", 1)[1].strip() for line in lines if line.strip().startswith("full_key:")), None)
        return f"{lines[0]}" + (f" (key {key})" if key else "")
    return None


def os_message(err: OSError) -> str:
    """``[Errno 30] Read-only file system: 'x'`` as ``x: read-only file system``."""
    reason = (err.strerror or str(err)).rstrip(".")
    reason = reason[:1].lower() + reason[1:]
    return reason if err.filename is None else f"{err.filename}: {reason}"


def expected_message(err: BaseException) -> str | None:
    """The one-line message for an expected failure (a bad config, file, value or environment),
    or None for anything else (a bug, whose traceback should be seen)."""
    if isinstance(err, EXPECTED):
        return one_line(str(err))
    if isinstance(err, OSError) and err.errno is not None:      # a directory that cannot be made or written
        return os_message(err)
    return hydra_message(err)


def report_and_exit(err: BaseException, emit=None) -> None:
    """Exit for ``err``: 130/143 for interruptions, 1 with one line for expected errors, 1 with the
    traceback and a line calling it a bug for anything else.

    ``emit`` receives the message (default: print to stderr).
    """
    if isinstance(err, TrainingInterrupted):
        if err.aborted:
            _emit(f"cifarnet: {err}", emit)
        sys.exit(128 + err.signum)
    if isinstance(err, (KeyboardInterrupt, Terminated)):     # outside training (loading data, evaluating)
        signum = signal.SIGTERM if isinstance(err, Terminated) else signal.SIGINT
        _emit(f"cifarnet: interrupted ({signal.Signals(signum).name})", emit)
        sys.exit(128 + signum)
    if os.environ.get("CIFARNET_TRACEBACK") == "1":
        raise err
    message = expected_message(err)
    if message is None:
        trace = "".join(traceback.format_exception(err)).rstrip()
        _emit(f"{trace}\n{BUG.format(kind=type(err).__name__)}", emit)
        sys.exit(1)
    _emit(f"cifarnet: error: {message}", emit)
    sys.exit(1)


def _emit(line: str, emit=None) -> None:
    if emit is None:
        print(line, file=sys.stderr)
    else:
        emit(line)
