"""The command line's entry points as Python functions: run a sweep file, resume an experiment.

    import bnsweep
    root = bnsweep.run_sweep("sweeps/demo.yaml", storage="results")   # as `bnsweep run`
    root = bnsweep.resume(root)                                        # as `bnsweep resume`

Both check what the command line checks, in the same order (bad input is a `bnsweep.errors.BadInput`
before Ray starts and before anything is written), run every stage not yet finished, and return the
experiment directory; read it with `bnsweep.results`. A stage with failed trials raises
`SweepFailed`, an interrupted one `SweepInterrupted`; `resume` continues either.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from bnsweep.files import is_uri, output_path
from bnsweep.layout.paths import location, sweep_dir
from bnsweep.sweep.driver import SweepFailed, SweepInterrupted, execute, resume_sweep
from bnsweep.sweep.spec import Sweep, check_name, load_sweep

__all__ = ["SweepFailed", "SweepInterrupted", "run_experiment", "run_sweep", "resume"]


def run_sweep(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None, *, storage: str = "results",
              name: str | None = None, address: str | None = None, resume: bool = False) -> str:
    """Run the sweep file at `path` (as `bnsweep run PATH --storage STORAGE`) and return its
    experiment directory, `<storage>/<name>`.

    Args:
        overrides: trial keys set in every stage (`--set KEY=VALUE`), stored with the experiment.
        storage: a local directory or a URI (`s3://...`, `gs://...`).
        name: the experiment's name (default: the sweep file's `name:`).
        address: a Ray cluster to join (default: RAY_ADDRESS, else a local Ray).
        resume: continue the experiment if it exists already (else it is refused).
    """
    sweep = load_sweep(os.fspath(path), overrides)
    root = sweep_dir(storage, check_name("name", name) if name is not None else sweep.name)
    if not is_uri(root):  # a local path, or a file:// URI of one
        output_path(location(storage), "storage", directory=True)
        output_path(root, "storage", directory=True)
    run_experiment(sweep, root, resume=resume, address=address)
    return root


def resume(directory: str | os.PathLike, *, address: str | None = None) -> str:
    """Continue the experiment in `directory` (as `bnsweep resume DIRECTORY`) with the sweep file and
    `--set` keys it started with; return its directory."""
    root = location(directory)
    run_experiment(resume_sweep(root), root, resume=True, address=address)
    return root


def run_experiment(sweep: Sweep, root: str, *, resume: bool, address: str | None = None,
                   command: str | None = None) -> None:
    """Run `sweep` into `root` (`execute`); before resuming, refuse an experiment directory that
    others could have planted a pickle in, or whose trial files are damaged, before anything runs."""
    if resume:
        from bnsweep.results.load import check_experiment
        from bnsweep.sweep.trust import check_trusted

        check_trusted(root)  # first: links and special files are refused, not read
        check_experiment(root)
    execute(sweep, root, resume=resume, address=address, command=command)
