"""Expected failures: what cifarnet checked and refused, as opposed to bugs.

:class:`CifarnetError` is the base of every expected failure (a bad config, file, value or
environment: :class:`InvalidValue`, ``CheckpointError``, ``DataError``, ...); the command line
ends one with a single line (:mod:`cifarnet.cli.errors`), and so does an MPI rank
(:mod:`cifarnet.distributed.rank`); any other exception is a bug and keeps its traceback. Raise
:class:`InvalidValue` where input is checked, a plain ``ValueError`` (or an assertion) for what
only a bug in cifarnet can cause.
"""
from __future__ import annotations


class CifarnetError(Exception):
    """An expected failure: its message says what was wrong, in one line, without a traceback."""


class InvalidValue(CifarnetError, ValueError):
    """A value given to cifarnet is outside what it accepts; the message names it and the range."""


def one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).strip().splitlines() if part.strip())


def os_message(err: OSError) -> str:
    """``[Errno 30] Read-only file system: 'x'`` as ``x: read-only file system``."""
    reason = (err.strerror or str(err)).rstrip(".")
    reason = reason[:1].lower() + reason[1:]
    return reason if err.filename is None else f"{err.filename}: {reason}"


def expected_message(err: BaseException) -> str | None:
    """The one-line message for an expected failure (:class:`CifarnetError`, or an OS error on a
    file or directory), or None for anything else (a bug, whose traceback should be seen).
    The command line adds Hydra's composition errors (:func:`cifarnet.cli.errors.expected_message`)."""
    if isinstance(err, CifarnetError):
        return one_line(str(err))
    if isinstance(err, OSError) and err.errno is not None:      # a directory that cannot be made or written
        return os_message(err)
    return None
