"""Bad input: the one family of errors the command line turns into one line on stderr and exit 2.

Each is raised as early as possible (before data is loaded or Ray starts) and pickles by value, so
one raised inside a Ray trial reaches the driver with its message intact.
"""

from __future__ import annotations

from typing import Any


class BadInput(ValueError):
    """Input the user can fix; str() is the one line shown."""

    def __reduce__(self):
        return (_rebuild, (type(self), str(self), self.__dict__))


def _rebuild(cls: type, message: str, state: dict[str, Any]) -> BadInput:
    # __init__ is skipped (ConfigError's takes other arguments); __new__ comes from the base that
    # fixes the memory layout (FileNotFoundError for NoExperimentError), as when it was raised
    err = cls.__base__.__new__(cls)
    err.args = (message,)
    err.__dict__.update(state)
    return err


class ConfigError(BadInput):
    """A bad key or value of a trial, a sweep file or a command-line option."""

    def __init__(self, key: str, value: Any, allowed: str, where: str = ""):
        self.key, self.value, self.allowed = key, value, allowed
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{key}: {value!r} is not allowed; allowed: {allowed}")


class DataError(BadInput):
    """A data set that is missing, incomplete or unreadable; the message says where and how to fix it."""


class UsageError(BadInput):
    """A bad combination of command-line options, or an output path that cannot be written."""


class NoExperimentError(BadInput, FileNotFoundError):
    """The path holds no Ray Tune experiment (nor a sweep directory of them)."""


class DamagedWarning(UserWarning):
    """A file of an experiment directory that does not read as Ray or bnsweep writes it: `results`
    and `report` skip what it belongs to (the command line shows it as one line)."""
