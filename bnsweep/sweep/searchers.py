"""Search algorithms that, on restore, agree with the trials Ray Tune restores.

Ray Tune keeps a stage's state in two files, saved together but copied to the storage one after the
other by a background thread: the experiment's snapshot (`experiment_state-*.json`: every trial made
so far and its status) and the search algorithm's state (`basic-variant-state-*.json` or
`search_gen_state-*.json`: which trials it counts as running, how many it has made). A driver killed
while they are copied, or a save that lands while a copy runs, leaves them from two different
moments. `Tuner.restore` restores the trials from the snapshot and the search algorithm from its own
file, so they disagree:

- it counts as running a trial the snapshot lists as finished: under `max_concurrent` it waits for
  that trial for ever, and `bnsweep resume` hangs once the rest has finished (a CI run of the
  killed-driver test did);
- it has made fewer trials than the snapshot lists: it makes them again (a grid's with the same ids);
- it has made more: those are in no snapshot, and never run.

These subclasses take the snapshot as the truth after Ray's own restore: the trials counted as
running are its unfinished ones, and the count of trials made is its count. A grid or random stage
makes its trials again from the start to stand just after the snapshot's last one: the generator
kept an unstarted copy of itself, and trial k is the same trial each time (the stage's seed fixes
the draws). Experiments started before these existed restore as before.
"""

from __future__ import annotations

import copy
import itertools
import os
from typing import Any

import pyarrow.fs as pafs
from ray.tune.search import ConcurrencyLimiter, SearchGenerator
from ray.tune.search.basic_variant import BasicVariantGenerator

from bnsweep.layout.tune import SnapshotTrial, newest_snapshot, read_snapshot


def snapshot_trials(dirpath: str) -> list[SnapshotTrial] | None:
    """The trials of the newest experiment snapshot in `dirpath` (Tune's local copy of the storage's
    experiment directory, the snapshot it restored from); None without one."""
    name = newest_snapshot(os.listdir(dirpath))
    if name is None:
        return None
    path = os.path.join(dirpath, name)
    return read_snapshot(pafs.LocalFileSystem(), path, path)


def running_ids(trials: list[SnapshotTrial]) -> set[str]:
    """The ids of the trials Ray restores to run again: those the snapshot lists as not ended."""
    return {t.trial_id for t in trials if t.trial_id and t.unfinished}


class SnapshotVariants(BasicVariantGenerator):
    """Ray Tune's grid and random search, restored in agreement with the experiment's snapshot."""

    def add_configurations(self, experiments) -> None:
        """Ray's, then an unstarted copy of the trial iterators, kept to make trials again on restore
        (it is saved with the rest: Ray pickles the search's `__dict__`)."""
        super().add_configurations(experiments)
        self._unstarted = copy.deepcopy(self._iterators)

    def restore_from_dir(self, dirpath: str) -> None:
        """Ray's restore, then the running trials and the count made taken from the snapshot."""
        super().restore_from_dir(dirpath)
        trials = snapshot_trials(dirpath)
        if trials is None or not hasattr(self, "_unstarted"):
            return
        self._live_trials = running_ids(trials)
        prefix = self._uuid_prefix  # a trial's id: the prefix, then its number
        made = 1 + max((int(t.trial_id[len(prefix):]) for t in trials
                        if t.trial_id and t.trial_id.startswith(prefix) and t.trial_id[len(prefix):].isdigit()),
                       default=-1)
        if made != sum(it.counter - start.counter for it, start in zip(self._iterators, self._unstarted)):
            self._iterators = copy.deepcopy(self._unstarted)
            trial_iter = iter(itertools.chain(*self._iterators))
            for _ in range(made):  # trial k is made again as it was: same id, same config
                next(trial_iter)
            self._trial_generator, self._trial_iter = trial_iter, trial_iter  # type: ignore[assignment]
            self._finished = False  # the next trial, or its absence, tells


class SnapshotSearch(SearchGenerator):
    """A model-based searcher (Optuna) with its `max_concurrent` limiter, restored in agreement with
    the experiment's snapshot. The searcher's own model keeps what it was told when its file was
    saved: that changes only which configurations it suggests next."""

    def restore_from_dir(self, dirpath: str) -> None:
        """Ray's restore, then the count made and the limiter's running trials from the snapshot."""
        super().restore_from_dir(dirpath)
        trials = snapshot_trials(dirpath)
        if trials is None:
            return
        self._counter = len(trials)
        self._finished = False
        searcher: Any = self.searcher
        while searcher is not None and not isinstance(searcher, ConcurrencyLimiter):
            searcher = getattr(searcher, "searcher", None)
        if searcher is not None:
            searcher.live_trials = running_ids(trials)
            searcher.num_unfinished_live_trials = len(searcher.live_trials)
