"""Turn expected failures into one line on stderr and a non-zero exit, without a traceback."""
from __future__ import annotations

import os
import sys

from ..backend import BackendUnavailable
from ..checkpoint import CheckpointError
from ..data import DataError
from ..experiment import ConfigError
from ..models import ModelSpecError
from ..registry import UnknownNameError
from ..training.trainer import NonFiniteError, TrainingInterrupted

# ValueError: the library validates arguments (batch size, val_size, rates, ...) with ValueErrors
# whose message names the value; CIFARNET_TRACEBACK=1 shows the traceback instead.
EXPECTED = (BackendUnavailable, CheckpointError, DataError, ConfigError, ModelSpecError, UnknownNameError,
            NonFiniteError, ValueError)


def one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).strip().splitlines() if part.strip())


def hydra_message(err: BaseException) -> str | None:
    """A one-line cause for Hydra's and OmegaConf's composition errors, or None if not one of them."""
    from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException, \
        OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(err, MissingConfigException):
        group = err.missing_cfg_file.rsplit("/", 1)[0] if err.missing_cfg_file else "config"
        name = err.missing_cfg_file.rsplit("/", 1)[-1] if err.missing_cfg_file else "?"
        options = [o for o in (err.options or []) if not o.endswith("_schema")]   # schemas are not choices
        known = ", ".join(options) if options else "(none)"
        return f"unknown {group} {name!r}; known: {known}"
    if isinstance(err, (ConfigCompositionException, OverrideParseException, HydraException)):
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        cause = err.__cause__
        if isinstance(cause, OmegaConfBaseException):
            return f"{first} {str(cause).strip().splitlines()[0]}"
        return one_line(first)
    if isinstance(err, OmegaConfBaseException):
        lines = str(err).strip().splitlines()
        key = next((l.split(":", 1)[1].strip() for l in lines if l.strip().startswith("full_key:")), None)
        return f"{lines[0]}" + (f" (key {key})" if key else "")
    return None


def report_and_exit(err: BaseException, emit=None) -> None:
    """Exit for ``err``: 130/143 for interruptions, 1 with one line for expected errors; re-raise others.

    ``emit`` receives the one-line message (default: print to stderr).
    """
    if isinstance(err, TrainingInterrupted):
        sys.exit(128 + err.signum)
    message = None
    if os.environ.get("CIFARNET_TRACEBACK") == "1":
        raise err
    if isinstance(err, EXPECTED):
        message = one_line(str(err))
    else:
        message = hydra_message(err)
    if message is None:
        raise err
    if emit is None:
        print(f"cifarnet: error: {message}", file=sys.stderr)
    else:
        emit(f"cifarnet: error: {message}")
    sys.exit(1)
