"""What every subcommand shares: the parser class whose errors are one line, bounded numbers,
output files whose failures are one line, messages on stderr, trial keys from --config and --set."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from typing import Any

from bnsweep.errors import ConfigError, UsageError, printable
from bnsweep.files import write_failed

SET_HELP = ("override trial keys in every stage, e.g. data_dir=/data/cifar10-jpeg.tar.gz epochs=2 (keys a "
            "stage's grid: or search: varies are refused)")
PATHS_HELP = "sweep or experiment directories (or URIs)"


class Parser(argparse.ArgumentParser):
    """argparse's own errors (an unknown option, `--watch abc`, a choice not offered) become the one
    `bnsweep: error: ...` line with exit status 2, as every other bad input does, instead of a usage
    block and another prefix. Subparsers are made of this class too (argparse's default)."""

    def error(self, message: str):
        raise UsageError(f"{message}; see {self.prog} --help")


def number(kind: type, low: float, high: float, what: str):
    """An argparse type: a finite `kind` (int or float) within [low, high], else one line naming the
    value and the range."""
    bounds = f"{low:,} to {high:,}" if kind is int else f"{low:g} to {high:g}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}; "
                                             f"allowed: {what}, {bounds}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"{text} is not allowed; allowed: {what}, {bounds}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


@contextlib.contextmanager
def writing(option: str, path: str | None):
    """An output file that fails while it is written (a full disk) is one line naming it, not a
    traceback (`path` None: standard output, see `main`)."""
    try:
        yield
    except OSError as err:
        if path is None:
            raise
        raise write_failed(option, path, err) from None


def say(message: str) -> None:
    """One line `bnsweep: MESSAGE` on stderr, control characters of user input shown escaped; a
    closed terminal (SIGHUP) or stderr is not an error of its own."""
    with contextlib.suppress(OSError):
        print(f"bnsweep: {printable(message)}", file=sys.stderr, flush=True)


def comma_list(text: str | None) -> list[str]:
    """`a, b,c` -> ['a', 'b', 'c'] (an option's comma-separated names)."""
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def trial_keys(args: argparse.Namespace) -> dict[str, Any]:
    """Trial keys from --config, then --set (checked where they are used)."""
    from bnsweep.core.yamlfile import load_yaml, parse_overrides

    values: dict[str, Any] = {}
    if args.config:
        loaded = load_yaml(args.config)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError("file", args.config, "a YAML mapping of trial keys")
        values.update(loaded or {})
    values.update(parse_overrides(args.set or []))
    return values
