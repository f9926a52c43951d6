"""Errors raised for bad user input.

Every problem a user can fix (a wrong config key, a missing or corrupt data file, a shape
mismatch, a checkpoint from another architecture) raises :class:`UserInputError` with one
message that names the problem and the fix.  The ``imae`` command prints that message on one
line and exits with status 2, without a traceback.
"""

from __future__ import annotations


class UserInputError(Exception):
    """A problem with what the user gave us; the message says what is wrong and how to fix it."""


class ConfigError(UserInputError):
    """An unknown key, a wrong type or an out-of-range value in a configuration."""


class DataError(UserInputError):
    """A missing, corrupt or malformed data file, or data of the wrong shape."""


class CheckpointError(UserInputError):
    """A run folder or checkpoint that is missing, corrupt or from another architecture."""
