"""Ray Tune's files as bnsweep reads them: the experiment-state snapshot (`experiment_state-*.json`,
the trials Ray knows and their statuses) and a trial's `result.json` (one JSON row per epoch).

Only JSON is read, never pickles, and every read is bounded, so a file of a running, interrupted or
damaged experiment is read safely or refused with one DataError naming it. The sweep driver (which
trials a stage left unfinished, a trial's last epoch) and `results.load` read through here.
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
from dataclasses import dataclass
from typing import Any, Iterable

import pyarrow.fs as pafs

from bnsweep.core.choices import UNFINISHED, TrialStatus
from bnsweep.errors import DataError
from bnsweep.layout.paths import damaged, filesystem, open_file, read_file

STATE_PATTERN = "experiment_state-*.json"
# Bounds on what is read of a file (a sparse 40 GiB result.json must not be read whole):
MAX_STATE_BYTES = 512 << 20  # an experiment-state snapshot (about 6 KB per trial)
MAX_RESULT_BYTES = 512 << 20  # one trial's result.json read whole (`history`): 100,000 epochs of 5 KB rows
MAX_ROW_BYTES = 16 << 20  # one line of it: how far back the one-row-per-trial read looks for the last line


class SnapshotUnreadable(DataError):
    """A snapshot that is not JSON at all: usually one Ray is rewriting at this moment."""


@dataclass
class SnapshotTrial:
    """One trial as Ray's experiment-state snapshot lists it."""

    logdir: str  # its directory inside the experiment
    trial_id: str | None
    status: str | None  # Ray's: PENDING, RUNNING, PAUSED, TERMINATED, ERROR
    config: dict[str, Any] | None
    start_time: float | None
    num_failures: int | None

    @property
    def unfinished(self) -> bool:
        """Not ended (pending, running or paused): a restored stage runs it again."""
        return TrialStatus.from_ray(self.status) in UNFINISHED


def newest_snapshot(names: Iterable[str]) -> str | None:
    """The newest experiment-state snapshot among file names (Ray names them by time), if any."""
    return max((n for n in names if fnmatch.fnmatch(n, STATE_PATTERN)), default=None)


def read_snapshot(fs: pafs.FileSystem, path: str, uri: str) -> list[SnapshotTrial]:
    """The trials of the snapshot at `path` (`uri` names it in errors). A file out of bounds or not
    laid out as Ray writes it is a DataError naming it; one that is not JSON at all (being rewritten)
    a SnapshotUnreadable."""
    text = read_file(fs, path, uri, MAX_STATE_BYTES).decode("utf-8", errors="replace")
    try:
        state = json.loads(text)
    except ValueError as err:
        raise SnapshotUnreadable(f"{uri}: damaged (ValueError: {err})") from None
    try:
        trials = []
        for trial_json, runtime_json in state["trial_data"]:
            spec, runtime = json.loads(trial_json), json.loads(runtime_json)
            logdir = spec.get("relative_logdir") or spec["trial_id"]
            if not _plain_name(logdir) or not isinstance(spec.get("config", {}), dict):
                raise TypeError("trial without a directory in the experiment, or without a config")
            trials.append(SnapshotTrial(logdir=logdir, trial_id=spec.get("trial_id"), status=spec.get("status"),
                                        config=spec.get("config"), start_time=runtime.get("start_time"),
                                        num_failures=runtime.get("num_failures")))
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise DataError(f"{uri}: damaged ({type(err).__name__}: {err})") from None
    return trials


def _plain_name(name: Any) -> bool:
    """A directory name inside the experiment: one path component, not `.` or `..`."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def _row(line: bytes, uri: str) -> dict[str, Any]:
    """One complete line of result.json: a JSON object as Ray's logger writes it, else DataError."""
    try:
        row = json.loads(line)
    except ValueError:
        row = None
    if not _is_row(row):
        raise DataError(f"{uri}: damaged (a line that is not a result row: {line[:60].decode(errors='replace')!r})")
    return row


def _is_row(row: Any) -> bool:
    return (isinstance(row, dict) and isinstance(row.get("training_iteration", 0), int)
            and isinstance(row.get("trial_id", ""), str) and isinstance(row.get("config", {}), dict))


def _rows(data: bytes, uri: str) -> list[dict[str, Any]]:
    """The rows of result.json text: complete lines must be rows; a last line without its newline
    that is not JSON yet is one being written (a cut JSON object is never valid JSON) and is left out."""
    *complete, tail = data.split(b"\n")
    rows = [_row(line, uri) for line in complete if line.strip()]
    try:
        json.loads(tail)
    except ValueError:
        return rows
    return rows + [_row(tail, uri)]


def last_rows(fs: pafs.FileSystem, path: str, uri: str) -> list[dict[str, Any]]:
    """The last complete row of result.json, reading only the file's tail (at most MAX_ROW_BYTES of
    it, so a 40 GiB file costs no more than its last line)."""
    f, size = open_file(fs, path, uri, 1 << 62)
    with f:
        block = 8192
        while True:
            start = max(0, size - block)
            f.seek(start)
            *complete, tail = f.read(size - start).split(b"\n")
            if start > 0:  # the block starts inside a line
                if not complete:
                    if block >= MAX_ROW_BYTES:
                        raise damaged(uri, f"no line ends in its last {MAX_ROW_BYTES >> 20} MiB")
                    block *= 8
                    continue
                complete = complete[1:]
            last = [line for line in complete if line.strip()][-1:]  # only the row needed is checked
            rows = _rows(b"\n".join([*last, tail]), uri)
            if rows or start == 0:
                return rows[-1:]
            if block >= MAX_ROW_BYTES:
                raise damaged(uri, f"no complete row in its last {MAX_ROW_BYTES >> 20} MiB")
            block *= 8


def last_row(trial_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The last complete row of the result.json in a trial directory (a path or URI); None when
    there is none. A damaged file raises DataError."""
    fs, path, prefix = filesystem(trial_dir)
    path = posixpath.join(path, "result.json")
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    rows = last_rows(fs, path, prefix + path)
    return rows[-1] if rows else None


def all_rows(fs: pafs.FileSystem, path: str, uri: str) -> list[dict[str, Any]]:
    """Every row of result.json (at most MAX_RESULT_BYTES of it); a re-reported iteration (after a
    restore) keeps its last row."""
    data = read_file(fs, path, uri, MAX_RESULT_BYTES)
    try:  # one parse of the whole file is ~30% faster than one per line
        stripped = data.strip()
        rows = json.loads(b"[" + stripped.replace(b"\n", b",") + b"]") if stripped else []
        if not all(map(_is_row, rows)):
            raise ValueError("not rows")
    except ValueError:  # a line still being written, or damage: line by line, to tell which
        rows = _rows(data, uri)
    iterations = [r.get("training_iteration") for r in rows]
    if len(set(iterations)) == len(rows):
        return rows
    return list({it: r for it, r in zip(iterations, rows)}.values())
