"""`bnsweep prune DIR --keep last`: delete the checkpoints that neither a later stage nor a resume needs.

While a trial trains it keeps `checkpoints_to_keep` checkpoints, to resume from. Once it ended
(terminated, ASHA-stopped included, or diverged) it never trains again, and only its newest
checkpoint is still of use: later stages start from it (the paths recorded in bnsweep_state.json),
`results.load` lists it, `bnsweep eval` reads it. Trials that may still train (pending, running,
paused, error) keep every checkpoint: resume continues from the newest, and Ray's bookkeeping still
lists the older ones (a resumed trial's next checkpoint fails with FileNotFoundError in Tune's
controller when Ray goes to delete one that is gone). Only `checkpoint_*` directories are deleted;
result.json, params.json, progress.csv and the event files stay.

It reads trials as `results` does and refuses experiments as the sweep driver does, so it sits
above both, beside the command line.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from bnsweep import results
from bnsweep.core.choices import ENDED
from bnsweep.layout.paths import filesystem, locate_sweep
from bnsweep.layout.state import load_state
from bnsweep.sweep.trust import check_trusted


@dataclass
class Plan:
    """What pruning would delete, and what it keeps on purpose."""

    root: str  # the sweep directory
    delete: list[tuple[str, int]] = field(default_factory=list)  # (checkpoint URI, bytes)
    ended_trials: int = 0
    unfinished_trials: int = 0  # their checkpoints are all kept
    kept_for_stages: int = 0  # older than the newest, kept because bnsweep_state.json names them

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.delete)


def _inner(uri: str) -> str:
    return filesystem(uri)[1]


def _checkpoints(trial_dir: str) -> list[tuple[str, int]]:
    """(URI, bytes) of a trial directory's checkpoint directories, oldest first."""
    fs, path, prefix = filesystem(trial_dir)
    found = []
    for entry in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
        if entry.type == pafs.FileType.Directory and entry.base_name.startswith("checkpoint_"):
            files = fs.get_file_info(pafs.FileSelector(entry.path, recursive=True))
            found.append((prefix + entry.path, sum(f.size for f in files if f.type == pafs.FileType.File)))
    return sorted(found)


def plan(path: str) -> Plan:
    """The checkpoints `prune --keep last` deletes under a sweep (or stage) directory. An experiment
    holding a symbolic link (which could lead the deletion out of it), a special file or another
    user's file is refused, as `run` and `resume` refuse it."""
    root, _ = locate_sweep(path)
    check_trusted(root)
    state = load_state(root)
    needed = {_inner(uri) for stage in state["stages"].values() for uri in stage.get("checkpoints", {}).values()}
    out = Plan(root)
    for row in results.load(path).itertuples():
        if row.status not in ENDED:
            out.unfinished_trials += 1
            continue
        out.ended_trials += 1
        for uri, size in _checkpoints(row.trial_dir)[:-1]:  # the newest stays
            if _inner(uri) in needed:
                out.kept_for_stages += 1
            else:
                out.delete.append((uri, size))
    return out


def describe(p: Plan) -> str:
    return (f"{len(p.delete)} checkpoint(s) of {p.ended_trials} ended trial(s), {p.bytes / 2**20:.1f} MiB; kept: "
            f"the newest of each ended trial, {p.kept_for_stages} more that later stages start from, and every "
            f"checkpoint of {p.unfinished_trials} trial(s) not ended (pending, running, paused, error)")


def delete(p: Plan) -> None:
    """Delete the planned checkpoint directories: only `checkpoint_*` directories, and locally only
    those whose real path lies inside the experiment (no link leads out of it)."""
    inside = os.path.realpath(p.root) + os.sep
    for uri, _ in p.delete:
        fs, inner, _ = filesystem(uri)
        if not posixpath.basename(inner).startswith("checkpoint_"):  # never anything else
            continue
        if isinstance(fs, pafs.LocalFileSystem) and (os.path.islink(inner) or
                                                      not os.path.realpath(inner).startswith(inside)):
            continue
        fs.delete_dir(inner)
