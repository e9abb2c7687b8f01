"""Turn expected failures into one line on stderr and a non-zero exit, without a traceback.

Expected failures are cifarnet's own error types (:class:`cifarnet.errors.CifarnetError` and the
errors that derive from it: a config key, a file, a value), OS errors on files, and Hydra's
composition errors. Anything else (a ``ValueError`` from deep in NumPy, say) is a bug: it keeps its
traceback, followed by a line that says so. CIFARNET_TRACEBACK=1 shows the traceback of expected
errors too."""
from __future__ import annotations

import os
import signal
import sys
import traceback

from .. import errors
from ..errors import one_line
from ..training.signals import Terminated, TrainingInterrupted, raise_terminated

__all__ = ["Terminated", "expected_message", "hydra_message", "raise_terminated", "report_and_exit"]

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


def expected_message(err: BaseException) -> str | None:
    """The one-line message for an expected failure (:func:`cifarnet.errors.expected_message`, or a
    Hydra composition error), or None for anything else (a bug, whose traceback should be seen)."""
    return errors.expected_message(err) or hydra_message(err)


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
