"""Bad input: the one family of errors the command line turns into one line on stderr and exit 2.

Each is raised as early as possible (before data is loaded or Ray starts) and pickles by value, so
one raised inside a Ray trial reaches the driver with its message intact.
"""

from __future__ import annotations

import re
import reprlib
from typing import Any


class BadInput(ValueError):
    """Input the user can fix; str() is the one line shown."""

    def __reduce__(self):
        return (_rebuild, (type(self), str(self), self.__dict__))


def _rebuild(cls: type, message: str, state: dict[str, Any]) -> BadInput:
    # __init__ is skipped (ConfigError's takes other arguments); __new__ comes from the base that
    # fixes the memory layout (FileNotFoundError for NoExperimentError), as when it was raised
    err = cls.__base__.__new__(cls)  # type: ignore[call-overload]  # a BadInput subclass: __base__ is set
    err.args = (message,)
    err.__dict__.update(state)
    return err


MAX_SHOWN = 120  # characters of a bad value quoted in a message; longer ones are cut in the middle
# repr that stops after a few items of a container (a YAML document can hold 10,000 values)
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxtuple, _SHORT.maxset = 4, 8, 8, 8, 8
_SHORT.maxstring = _SHORT.maxlong = _SHORT.maxother = 10 * MAX_SHOWN


def shown(value: Any) -> str:
    """repr(value) for a one-line message: cut to MAX_SHOWN characters, never raising (repr of an int
    of thousands of digits does) and never walking a huge structure in full."""
    try:
        text = repr(value) if isinstance(value, str) else _SHORT.repr(value)
    except ValueError:  # an int longer than sys.get_int_max_str_digits()
        return f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"
    if len(text) > MAX_SHOWN:
        size = f" ({len(value)} characters)" if isinstance(value, str) else ""
        text = f"{text[:MAX_SHOWN - 30]}...{text[-20:]}{size}"
    return text.replace("\n", "\\n")


# C0 and C1 control characters, DEL, the Unicode line and paragraph separators and the bidirectional
# marks, overrides and isolates: what could end a line early, move the cursor or make text read
# differently than it is
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def reason(err: BaseException) -> str:
    """An exception's message for a one-line error: its first line, cut at the end of the first
    sentence (torch and zlib add paragraphs of advice), or its type's name when it has none."""
    text = str(err).strip()
    if not text:
        return type(err).__name__
    first = text.splitlines()[0]
    return first.split(". ", 1)[0] if len(first) > MAX_SHOWN else first


def printable(text: str) -> str:
    """`text` with control characters escaped (``\\n``, ``\\x1b``, ``\\u202e``), so a message
    that quotes user input (a folder named ``x\\nbnsweep: error: forged``) stays one honest line."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class ConfigError(BadInput):
    """A bad key or value of a trial, a sweep file or a command-line option."""

    def __init__(self, key: str, value: Any, allowed: str, where: str = ""):
        self.key, self.value, self.allowed = key, value, allowed
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{key}: {shown(value)} is not allowed; allowed: {allowed}")


class DataError(BadInput):
    """A data set that is missing, incomplete or unreadable; the message says where and how to fix it."""


class UsageError(BadInput):
    """A bad combination of command-line options, or an output path that cannot be written."""


class NoExperimentError(BadInput, FileNotFoundError):
    """The path holds no Ray Tune experiment (nor a sweep directory of them)."""


class DamagedWarning(UserWarning):
    """A file that does not read as Ray or bnsweep writes it: `results` and `report` skip the trial
    of a damaged experiment file, a damaged decoded-image cache is decoded anew (the command line
    shows each as one line)."""
