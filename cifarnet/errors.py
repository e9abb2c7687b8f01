"""The error type for bad input: a value a user gave (a config key, an argument, a file's contents)
that cifarnet checked and refused.

The command line ends such an error with one line naming the value (:mod:`cifarnet.cli.errors`);
any other exception is a bug and keeps its traceback. Raise :class:`InvalidValue` where input is
checked, a plain ``ValueError`` (or an assertion) for what only a bug in cifarnet can cause.
"""
from __future__ import annotations


class InvalidValue(ValueError):
    """A value given to cifarnet is outside what it accepts; the message names it and the range."""
