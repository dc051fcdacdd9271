"""The `bnsweep` command: run adversarial-training sweeps; read, report and record their results.

Subcommands: train, eval, layers (`cli/trials.py`); validate, run, resume, status, prune
(`cli/sweeps.py`); results, report, table, plot, record, quote (`cli/analysis.py`), each parser
beside its handler. Handlers parse, call into the layers and format; the layers raise
`errors.BadInput` for anything the user can fix, and `main` prints it as one line
(`bnsweep: error: ...`) and exits with status 2, before anything heavy (data, Ray) starts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import warnings

from bnsweep.cli import analysis, sweeps, trials
from bnsweep.cli.base import Parser, say
from bnsweep.errors import BadInput, DamagedWarning, printable

EXIT_BAD_INPUT = 2
EXIT_PIPE_CLOSED = 128 + signal.SIGPIPE  # 141: the reader of standard output went away (`| head`)
COMMANDS = (*trials.COMMANDS, *sweeps.COMMANDS, *analysis.COMMANDS)  # in the order --help lists them


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="bnsweep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def _stdout_broken() -> bool:
    """Whether standard output cannot be written (a full disk, /dev/full); then it is pointed at
    /dev/null, so Python's flush at exit does not fail again."""
    try:
        sys.stdout.flush()
    except OSError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return True
    return False


def _one_line_warnings(default=warnings.showwarning):
    """A `warnings.showwarning` that shows bnsweep's own warnings (a damaged file skipped) as one
    line, once each (`report` reads an experiment twice); others as Python shows them."""
    shown = set()

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, DamagedWarning):
            default(message, category, filename, lineno, file, line)
        elif str(message) not in shown:
            shown.add(str(message))
            with contextlib.suppress(OSError):
                print(f"bnsweep: warning: {printable(str(message))}", file=file or sys.stderr)

    return show


def main(argv: list[str] | None = None) -> int:
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warnings(warnings.showwarning)
        try:
            args = build_parser().parse_args(argv)
            args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed: kept with a new experiment
            code = args.func(args)
            sys.stdout.flush()
            return code
        except BadInput as err:
            say(f"error: {err}")
            return EXIT_BAD_INPUT
        except KeyboardInterrupt as err:
            signum = getattr(err, "signum", signal.SIGINT)
            say(f"interrupted ({signal.Signals(signum).name})")
            return 128 + signum
        except BrokenPipeError:  # the reader of standard output went away (`bnsweep results X | head`)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit: quiet
            return EXIT_PIPE_CLOSED
        except OSError as err:
            if not _stdout_broken():
                raise
            say(f"error: cannot write to standard output ({err.strerror or err})")
            return 1
