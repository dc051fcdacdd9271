"""Run records: a sweep's results, provenance and report in a small directory that can be committed,
so that a published number travels with its evidence (as airbench keeps each result beside the code
that made it).

    bnsweep record results/demo -o docs/runs/demo

A record directory holds:

- `record.json`: what made the numbers: the command that started the sweep, the machines and code
  that ran its trials (as the trials reported them), when it was recorded and by which code, the
  sweep's wall times (from what Ray and the trials wrote), and the column types of the two CSVs;
- `sweep.yaml` (the sweep file as run) and `overrides.yaml` (its `--set` keys, when there were any);
- `trials.csv` (`results.load`: one row per trial) and `epochs.csv` (`results.history`: one row per
  trial and epoch), typed so that reading them back gives the same frames;
- the report of the record itself (`report.md`, `table.tex`, the figures as PNG and PDF).

No checkpoints and no event files. `results.load`, `results.history`, `bnsweep results`, `table`,
`plot` and `report` read a record as they read the experiment it was made from, with the same
output.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import os
import posixpath
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow.fs as pafs

from bnsweep.errors import DataError, UsageError
from bnsweep.files import is_uri
from bnsweep.layout.paths import (
    OVERRIDES_FILE,
    SWEEP_FILE,
    filesystem,
    read_text,
)
from bnsweep.layout.state import load_state

RECORD_FILE = "record.json"
TRIALS_FILE, EPOCHS_FILE = "trials.csv", "epochs.csv"
FORMAT = "bnsweep-record/1"
# How a column's cells are written (see `_encode`): numbers, text, JSON values, timestamps.
NUMBER, TEXT, TEXT_EMPTY, JSON, TIME = "number", "text", "text, empty is ''", "json", "iso time"


# ----------------------------------------------------------------------------- typed CSV


def _kind(col: pd.Series) -> str:
    """How a column is written so that reading it back gives the same values and dtype."""
    dtype = str(col.dtype)
    if dtype.startswith("datetime64"):
        return TIME
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        return NUMBER
    if dtype == "str":
        empty, missing = (col == "").any(), col.isna().any()
        return JSON if empty and missing else TEXT_EMPTY if empty else TEXT
    return JSON  # lists (eval_eps_255), None, mixed values


def _encode(value: Any, kind: str) -> str:
    if kind == JSON:
        return "" if value is None else json.dumps(value)
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return ""
    if kind == TIME:
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back as the same float
    return str(value)


def _decode(cells: list[str], kind: str, dtype: str) -> pd.Series:
    if kind == JSON:  # lists and mixed values, or text holding both '' and missing values
        values = pd.Series([None if c == "" else json.loads(c) for c in cells], dtype=object)
        return values if dtype == "object" else values.astype(dtype)
    if kind == TIME:
        return pd.Series(pd.to_datetime(cells, utc=True, format="ISO8601")).astype(dtype)
    if kind in (TEXT, TEXT_EMPTY):
        return pd.Series([None if c == "" and kind == TEXT else c for c in cells], dtype=dtype)
    if dtype in ("bool", "boolean"):
        return pd.Series([None if c == "" else c == "True" for c in cells], dtype=dtype)
    if dtype.startswith(("int", "uint", "Int", "UInt")):
        return pd.Series([None if c == "" else int(c) for c in cells], dtype=dtype)
    return pd.Series([math.nan if c == "" else float(c) for c in cells], dtype=dtype)


def write_csv(df: pd.DataFrame, path: str) -> dict[str, Any]:
    """Write `df` as CSV; returns its schema (for `read_csv`): each column's dtype and how its
    cells are written, and the frame's trial and metric keys."""
    kinds = {name: _kind(df[name]) for name in df.columns}
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(df.columns)
        columns = [[_encode(v, kinds[name]) for v in df[name].tolist()] for name in df.columns]
        writer.writerows(zip(*columns))
    return {"columns": [[name, str(df[name].dtype), kinds[name]] for name in df.columns],
            "trial_keys": df.attrs.get("trial_keys", []), "metric_keys": df.attrs.get("metric_keys", [])}


def read_csv(text: str, schema: dict[str, Any], where: str) -> pd.DataFrame:
    """A frame written by `write_csv`, with its dtypes and attrs; DataError if it does not match."""
    rows = list(csv.reader(io.StringIO(text)))
    names = [c[0] for c in schema["columns"]]
    if not rows or rows[0] != names or any(len(r) != len(names) for r in rows[1:]):
        raise DataError(f"{where}: damaged (its columns do not match {RECORD_FILE}); allowed: the file "
                        "as bnsweep record wrote it")
    cells = list(zip(*rows[1:])) if len(rows) > 1 else [()] * len(names)
    try:
        df = pd.DataFrame({name: _decode(list(col), kind, dtype)
                           for (name, dtype, kind), col in zip(schema["columns"], cells)},
                          index=pd.RangeIndex(len(rows) - 1))
    except (ValueError, TypeError) as err:
        raise DataError(f"{where}: damaged ({err}); allowed: the file as bnsweep record wrote it") from None
    df.attrs.update(trial_keys=list(schema["trial_keys"]), metric_keys=list(schema["metric_keys"]))
    return df


# ----------------------------------------------------------------------------- reading


@dataclass
class Record:
    """A record directory, read: `meta` is record.json."""

    path: str  # as given
    meta: dict[str, Any]

    def _file(self, name: str) -> str | None:
        return read_text(f"{self.root}/{name}")

    @property
    def root(self) -> str:
        return os.fspath(self.path) if is_uri(self.path) else os.path.abspath(self.path)

    def frame(self, name: str) -> pd.DataFrame:
        """trials.csv (`results.load`) or epochs.csv (`results.history`), as the experiment gave it."""
        text = self._file(name)
        if text is None:
            raise DataError(f"{self.root}/{name}: missing from the record; "
                            "allowed: a record as bnsweep record wrote it")
        return read_csv(text, self.meta["files"][name], f"{self.root}/{name}")

    def sweep_text(self) -> str | None:
        return self._file(SWEEP_FILE)


def is_record(path: str | os.PathLike) -> bool:
    """Whether `path` is a record directory (holds record.json)."""
    fs, inner, _ = filesystem(path)
    return fs.get_file_info(posixpath.join(inner, RECORD_FILE)).type == pafs.FileType.File


def read_record(path: str | os.PathLike) -> Record:
    """The record at `path`; DataError (one line) when its record.json is not one bnsweep wrote."""
    fs, inner, prefix = filesystem(path)
    uri = prefix + posixpath.join(inner, RECORD_FILE)
    try:
        meta = json.loads(read_text(uri) or "")
        if meta.get("format") != FORMAT or not all(
                isinstance(meta["files"][f]["columns"], list) for f in (TRIALS_FILE, EPOCHS_FILE)):
            raise ValueError(f"not {FORMAT}")
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise DataError(f"{uri}: damaged ({err}); allowed: the file as bnsweep record wrote it") from None
    return Record(os.fspath(path), meta)


# ----------------------------------------------------------------------------- writing


def _check_out(out: str) -> None:
    """A record goes into a new or empty directory, or replaces a record: never over other files."""
    if os.path.isdir(out) and os.listdir(out) and not os.path.isfile(os.path.join(out, RECORD_FILE)):
        raise UsageError(f"-o: {out} holds files and is not a record; allowed: a new or empty directory, "
                         "or a record to replace")


def write_record(experiment: str, out: str, *, allow_dirty: bool = False) -> str:
    """Make a record of `experiment` (a sweep directory, local or a URI) in the local directory
    `out`; returns the path of its record.json.

    Refused (UsageError, before anything is written) when the bnsweep that records, or the one that
    ran any trial, had uncommitted changes to tracked files, unless `allow_dirty`: the record then
    says so. A record replaces an older one whole: it is written beside it, then moved in place.
    """
    from bnsweep import provenance
    from bnsweep.layout.paths import locate_sweep
    from bnsweep.results import runinfo
    from bnsweep.results.load import history, load
    from bnsweep.results.report import write_report

    here = provenance.code()
    df, hist = load(experiment), history(experiment)
    run = runinfo.summary(df, hist)
    if not allow_dirty and (here.dirty or run["dirty"]):
        who = ("this bnsweep checkout has uncommitted changes to tracked files" if here.dirty else
               "trials ran from a bnsweep checkout with uncommitted changes")
        raise UsageError(f"record: {who}, so the numbers cannot be traced to a commit; allowed: a clean "
                         "checkout (commit first), or --allow-dirty to record anyway, marked dirty")
    _check_out(out)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".record-", dir=parent)  # written whole, then put in place
    try:
        _write(tmp, locate_sweep(experiment)[0], df, hist, {**run, "recorded": {
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "bnsweep": here.version, "commit": here.commit, "dirty": here.dirty}})
        write_report(tmp, tmp)  # a record's own report: its typed trials.csv stays
        if os.path.isdir(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
        os.chmod(out, 0o777 & ~_umask())  # mkdtemp made it private
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(out, RECORD_FILE)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write(out: str, root: str, df: pd.DataFrame, hist: pd.DataFrame, run: dict[str, Any]) -> None:
    """The record's files but its report: copies of the sweep directory `root`'s sweep files, the
    two CSVs, record.json."""
    copied = []
    for name in (SWEEP_FILE, OVERRIDES_FILE):
        text = read_text(f"{root}/{name}")
        if text is not None:
            with open(os.path.join(out, name), "w") as fh:
                fh.write(text)
            copied.append(name)
    command = load_state(root).get("command")  # a damaged state file: DataError, one line
    files = {TRIALS_FILE: write_csv(df, os.path.join(out, TRIALS_FILE)),
             EPOCHS_FILE: write_csv(hist, os.path.join(out, EPOCHS_FILE))}
    recorded = run.pop("recorded")
    meta = {
        "format": FORMAT,
        "experiment": ", ".join(dict.fromkeys(df["experiment"])) if len(df) else posixpath.basename(root),
        "source": root,
        "command": command if isinstance(command, str) else None,
        "recorded": recorded,
        **run,
        "dirty": run["dirty"] or recorded["dirty"],  # trials ran, or the record was made, from a dirty checkout
        "copied": copied,
        "files": files,
    }
    with open(os.path.join(out, RECORD_FILE), "w") as fh:
        json.dump(meta, fh, indent=1, default=str)
        fh.write("\n")
