"""The experiment layout, read and written by `sweep` and `results` alike so that neither imports
the other: bnsweep's own files (paths), its state file (state), Ray Tune's files as bnsweep reads
them (tune), what a sweep file plans per stage (plans) and how settings and metrics are labelled
(labels). Imports neither Ray nor torch.

Under `<storage>/<name>/`: `sweep.yaml` (the sweep file as run), `overrides.yaml` (its `--set`
trial keys, if any), `bnsweep_state.json` (finished stages and the checkpoints later stages start
from) and one Ray Tune experiment directory per stage, one trial directory per trial in it.
"""
