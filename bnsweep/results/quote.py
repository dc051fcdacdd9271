"""Numbers that a Markdown file quotes from records, kept equal to them.

A quoted block names its record and what to render from it; the text between the markers is
generated, never typed:

    <!-- record: docs/runs/demo table --where "stage == 'adv'" -->
    ...the table, as `bnsweep quote` wrote it...
    <!-- /record -->

    The demo took <!-- record: docs/runs/demo wall -->4 min 16 s<!-- /record --> ...

The path is relative to the Markdown file. `bnsweep quote docs/studies/demo.md` rewrites every block from its
record; `--check` (and tests/test_published.py) fails when one differs, so a number in the text cannot
drift from the run that measured it.

Kinds, for a run record (a directory made by `bnsweep record`):

- `table [--where EXPR] [--eps-255 E ...]`: the comparison table (mean ± std over seeds);
- `compare [--where EXPR] [A B | --reference R]`: differences of means with 95 % Welch intervals
  (default: the study's comparisons, as in report.md);
- `interval A B --metric COLUMN [--where EXPR]`: one such difference, inline;
- `cell COLUMN --where EXPR`: one cell of the table (`mean ± std`), inline;
- `timing`: the wall times (whole sweep, per stage, mean trial), a table;
- `costs`: where each stage's trial time went (training, evaluation and final attack, the rest), a
  table;
- `wall`: the whole sweep's wall time, inline;
- `provenance`: date, commit, machine and load of the run, inline.

For a benchmark record (a file written by `python -m bnsweep.bench --record FILE`):

- `bench header`: its provenance lines; `bench PART`: the lines a part printed (its paragraph).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
from pathlib import Path

from bnsweep.errors import UsageError
from bnsweep.layout.labels import duration

BLOCK = re.compile(r"<!-- record: (?P<spec>.+?) -->(?P<body>.*?)<!-- /record -->", re.DOTALL)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(f"record block: {message}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="record", add_help=False)
    p.add_argument("path")
    p.add_argument("kind", choices=("table", "compare", "interval", "cell", "timing", "costs", "wall", "provenance",
                                    "bench"))
    p.add_argument("args", nargs="*")
    p.add_argument("--where")
    p.add_argument("--eps-255", type=float, nargs="+")
    p.add_argument("--reference")
    p.add_argument("--metric")
    return p


def render(spec: str, base: str | os.PathLike = ".") -> str:
    """The text a block with this spec holds (without the markers), from its record."""
    args = _parser().parse_args(shlex.split(spec))
    path = Path(base) / args.path
    if args.kind == "bench":
        return _block(_bench(path, args.args))
    from bnsweep import results
    from bnsweep.results import compare, record, tables

    if not record.is_record(path):
        raise UsageError(f"record block {spec!r}: {path} is not a run record (no {record.RECORD_FILE})")
    meta = record.read_record(path).meta
    if args.kind == "wall":
        return duration(meta["wall_times"]["sweep_s"], exact=True)
    if args.kind == "provenance":
        return _provenance(meta)
    if args.kind == "timing":
        return _block(_timing(meta))
    if args.kind == "costs":
        return _block(_costs(results.history(path)))
    df = results.select(results.load(path), where=args.where)
    if args.kind == "table":
        return _block(tables.to_markdown(tables.summarize(df, radii=args.eps_255)))
    if args.kind == "cell":
        return _cell(tables.display_table(tables.summarize(df)), " ".join(args.args), spec)
    if args.kind == "compare":
        diffs = (compare.compare(df, *args.args) if len(args.args) == 2 else
                 compare.against_reference(df, args.reference) if args.reference else compare.study_comparisons(df))
        return _block(compare.to_markdown(diffs))
    if len(args.args) != 2 or not args.metric:  # interval
        raise UsageError(f"record block {spec!r}: interval takes A B --metric COLUMN")
    diffs = compare.compare(df, *args.args)
    row = diffs[diffs["metric"] == args.metric]
    if len(row) != 1:
        raise UsageError(f"record block {spec!r}: --metric {args.metric!r} is not one of "
                         f"{', '.join(diffs['metric'])}")
    return compare.inline(row.iloc[0])


def _block(text: str) -> str:
    """A multi-line block: its own paragraph, apart from the markers."""
    return "\n\n" + text.strip("\n") + "\n\n"


def _cell(cells, column: str, spec: str) -> str:
    if column not in cells.columns or len(cells) != 1:
        raise UsageError(f"record block {spec!r}: cell needs a column of the table ({', '.join(cells.columns)}) "
                         f"and a --where that leaves one row (it leaves {len(cells)})")
    return str(cells[column].iloc[0])


def _provenance(meta: dict) -> str:
    """`2026-12-03, commit abc1234, vm: AMD EPYC, 2 CPUs, ..., load average 1.2 (max 2.0)`."""
    from bnsweep.results import runinfo

    start = (meta["wall_times"].get("start") or meta["recorded"]["date"])[:10]
    commits = ", ".join(f"`{c['commit'][:7]}`" + (" (dirty)" if c.get("dirty") else "")
                        for c in meta["code"] if c.get("commit")) or "no git commit"
    machines = "; ".join(runinfo.machine_line(m) for m in meta["machines"]) or "machine not reported"
    load = meta.get("load_avg")
    text = f"{start}, commit {commits}, {machines}"
    return text + (f", load average {load['mean']:g} (max {load['max']:g})" if load else "")


def _timing(meta: dict) -> str:

    times = meta["wall_times"]
    rows = ["| part | wall time |", "|---|---|",
            f"| whole sweep (first trial start to last report) | {duration(times['sweep_s'], exact=True)} |"]
    for stage, t in times["stages"].items():
        rows.append(f"| stage `{stage}` ({t['trials']} trials; {duration(t['mean_trial_s'], exact=True)} a trial on "
                    f"average) | {duration(t['wall_s'], exact=True)} |")
    return "\n".join(rows) + "\n"


def _costs(hist) -> str:
    from bnsweep.results import runinfo

    rows = ["| stage | training | evaluation and final attack | other (start, data, checkpoints) |",
            "|---|---|---|---|"]
    for stage, t in runinfo.time_split(hist).items():
        total = sum(t.values())
        rows.append(f"| `{stage}` | " + " | ".join(
            f"{duration(t[part], exact=True)} ({100 * t[part] / total:.0f} %)"
            for part in ("training", "evaluation", "other")) + " |")
    return "\n".join(rows) + "\n"


def _bench(path: Path, what: list[str]) -> str:
    """The header lines (`#`) of a benchmark record, or the paragraph a part printed."""
    if not path.is_file():
        raise UsageError(f"record block: {path} is not a benchmark record (no such file)")
    text = path.read_text()
    if what == ["header"]:
        return "```text\n" + "\n".join(ln for ln in text.splitlines() if ln.startswith("#")) + "\n```"
    part = " ".join(what)
    for para in re.split(r"\n\s*\n", text):
        first = para.strip().splitlines()[0] if para.strip() else ""
        if first.startswith((f"[{part}]", f"== {part}")):
            return "```text\n" + para.strip("\n") + "\n```"
    raise UsageError(f"record block: {path} has no part {part!r}")


def _fences(text: str) -> list[tuple[int, int]]:
    """(start, end) of the fenced code blocks of `text`: examples of markers there are no blocks.
    A benchmark block's own fence opens and closes inside the block, so it pairs up here too."""
    spans, start, at = [], None, 0
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            if start is None:
                start = at
            else:
                spans.append((start, at + len(line)))
                start = None
        at += len(line)
    return spans


def blocks(text: str) -> list[re.Match]:
    """The quoted blocks of a Markdown text, in order (markers inside code fences are examples)."""
    fences = _fences(text)
    return [m for m in BLOCK.finditer(text) if not any(a <= m.start() < b for a, b in fences)]


def stale(text: str, base: str | os.PathLike) -> list[tuple[str, str, str]]:
    """(spec, quoted, rendered) of every block of `text` that differs from its record."""
    out = []
    for m in blocks(text):
        rendered = render(m["spec"], base)
        if m["body"] != rendered:
            out.append((m["spec"], m["body"], rendered))
    return out


def rewrite(path: str | os.PathLike, check: bool = False) -> list[str]:
    """Rewrite the blocks of the Markdown file `path` from their records (`check`: only compare);
    returns the specs of the blocks that differed."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"quote: {path} is not a file")
    text = path.read_text()
    base = path.parent
    changed = [spec for spec, _, _ in stale(text, base)]
    if changed and not check:
        out, at = [], 0
        for m in blocks(text):
            out += [text[at:m.start("body")], render(m["spec"], base)]
            at = m.end("body")
        path.write_text("".join(out) + text[at:])
    return changed
