"""What the docs generate at build time (an MkDocs hook), so that no reference is typed by hand.

A page asks for a generated block with a marker on a line of its own:

    <!-- generated: cli bnsweep -->                  every subcommand, option, default and help
    <!-- generated: cli python -m bnsweep.bench -->  the same for the benchmark
    <!-- generated: trial-keys -->                   the table `bnsweep validate --keys` prints
    <!-- generated: layout -->                       every package and module, with its docstring's summary

Programs are reached through their entry points in `PROGRAMS`, the only module paths in this file:
when a command moves to another module, change its line there (the `bnsweep` line must equal the
console script in pyproject.toml; tests/test_docs.py checks that). Parsers are read from the
programs themselves (`parser_of`), and tests/test_docs.py checks that the built site shows every
option of every parser. An unknown marker fails the build.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# The program as a user types it -> "module:function" that runs it with an argument list.
PROGRAMS = {
    "bnsweep": "bnsweep.cli:main",
    "python -m bnsweep.bench": "bnsweep.bench.runner:main",
}

MARKER = re.compile(r"^<!-- generated: (?P<what>[\w-]+)(?: (?P<arg>[^>]*?))? -->$", re.MULTILINE)


def entry_point(program: str) -> Callable[[list[str]], Any]:
    """The function that runs `program` with an argument list."""
    module, function = PROGRAMS[program].split(":")
    return getattr(importlib.import_module(module), function)


class Parsed(Exception):
    """Raised instead of running a program further once its top-level parser was called."""

    def __init__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace | None):
        super().__init__(parser.prog)
        self.parser, self.namespace = parser, namespace


@contextlib.contextmanager
def stop_at_parser(*, parse: bool) -> Iterator[None]:
    """Within this block a program stops at its top-level `ArgumentParser.parse_args` by raising
    `Parsed`: after parsing its arguments (`parse=True`; bad ones exit with argparse's message and
    status 2 as usual) or without parsing them (`parse=False`, to read the parser). Subcommands are
    parsed inside the top-level call, so the whole command line is read."""
    original = argparse.ArgumentParser.parse_args

    def stop(self, args=None, namespace=None):
        raise Parsed(self, original(self, args, namespace) if parse else None)

    argparse.ArgumentParser.parse_args = stop  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]


def parser_of(program: str) -> argparse.ArgumentParser:
    """The argument parser that `program` builds, read from its entry point."""
    with stop_at_parser(parse=False):
        try:
            entry_point(program)([])
        except Parsed as stopped:
            return stopped.parser
    raise RuntimeError(f"{program} ({PROGRAMS[program]}) did not call ArgumentParser.parse_args")


# -- the CLI reference ---------------------------------------------------------------------------

def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", r"\|")


def _names(action: argparse.Action) -> str:
    if action.option_strings:
        names = ", ".join(f"`{o}`" for o in action.option_strings)
        if action.nargs != 0:
            metavar = argparse.HelpFormatter("x")._format_args(action, action.dest.upper())
            names += f" `{metavar}`"
        return names
    return f"`{action.metavar or action.dest}`"


def _default(action: argparse.Action) -> str:
    if action.option_strings == [] or action.nargs == 0 or action.default in (None, argparse.SUPPRESS):
        return ""
    value = action.default
    shown = " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) if isinstance(value, list) \
        else f"{value:g}" if isinstance(value, float) else str(value)
    return f"`{shown}`"


def _help(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    return _cell(parser._get_formatter()._expand_help(action) if action.help else "")


def _arguments(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| argument | default | meaning |", "|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or action.help == argparse.SUPPRESS:
            continue
        rows.append(f"| {_names(action)} | {_default(action)} | {_help(action, parser)} |")
    return rows


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser, str]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return {name: (sub, helps.get(name, "")) for name, sub in action.choices.items()}
    return {}


def cli_reference(program: str) -> str:
    """Markdown for one program: usage and arguments, then a section per subcommand."""
    parser = parser_of(program)
    out = [f"```text\n{parser.format_usage().strip()}\n```", "", _cell(parser.description or ""), ""]
    subcommands = _subcommands(parser)
    if not subcommands or len(parser._actions) > 2:  # options of the program itself
        out += [*_arguments(parser), ""]
    if subcommands:
        out += ["| subcommand | what it does |", "|---|---|"]
        out += [f"| [`{name}`](#{program.replace(' ', '-')}-{name}) | {_cell(h)} |"
                for name, (_, h) in subcommands.items()]
        out.append("")
    for name, (sub, _) in subcommands.items():
        out += [f"## `{program} {name}` {{ #{program.replace(' ', '-')}-{name} }}", "",
                f"```text\n{sub.format_usage().strip()}\n```", "", _cell(sub.description or ""), "",
                *_arguments(sub), ""]
    return "\n".join(out)


# -- the trial keys and the layout ---------------------------------------------------------------

def program_output(program: str, argv: list[str]) -> str:
    """What `program argv` prints (run in this process); it must succeed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = entry_point(program)(argv)
    if status:
        raise RuntimeError(f"{program} {' '.join(argv)} exited with status {status}")
    return out.getvalue()


def trial_keys() -> str:
    return program_output("bnsweep", ["validate", "--keys"])


def _summary(path: Path) -> str:
    """The first paragraph of a module's docstring, on one line."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return _cell(doc.split("\n\n")[0])


def layout(package: str = "bnsweep") -> str:
    """A table of every package and module of `package`, from their docstrings."""
    root = REPO / package
    rows = ["| module | what it is for |", "|---|---|"]
    for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).parts):
        rel = path.relative_to(REPO)
        if path.name == "__main__.py":
            continue
        name = str(rel.parent if path.name == "__init__.py" else rel.with_suffix("")).replace("/", ".")
        rows.append(f"| `{name}` | {_summary(path)} |")
    return "\n".join(rows) + "\n"


GENERATORS: dict[str, Callable[..., str]] = {
    "cli": cli_reference,
    "trial-keys": trial_keys,
    "layout": layout,
}


def expand(markdown: str, where: str = "") -> str:
    """`markdown` with every marker replaced by what it asks for."""

    def generated(match: re.Match) -> str:
        what, arg = match["what"], match["arg"]
        if what not in GENERATORS:
            raise ValueError(f"{where}: unknown marker {match[0]!r}; known: {', '.join(GENERATORS)}")
        return GENERATORS[what](*([arg] if arg else []))

    return MARKER.sub(generated, markdown)


def on_page_markdown(markdown: str, *, page, config, files) -> str:
    """MkDocs hook: expand the markers of every page."""
    return expand(markdown, page.file.src_uri)
