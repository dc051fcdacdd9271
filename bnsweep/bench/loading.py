"""Part loading: `results.load`, `results.history` and `bnsweep status` on a generated experiment at
sweep scale (default 1,000 trials x 50 epochs, written in Ray Tune's on-disk layout by `bnsweep.testing`)."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bnsweep.testing import write_benchmark_experiment

Row = dict[str, Any]
QUICK = dict(load_trials=20, load_epochs=3, load_repeat=1)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--load-trials", type=int, default=1000, help="trials of the generated experiment (loading)")
    p.add_argument("--load-epochs", type=int, default=50, help="epochs per generated trial (loading)")
    p.add_argument("--load-repeat", type=int, default=3, help="timed loads (loading; the best is shown)")


def _timed(fn, *args) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def _status(path: Path) -> list:
    from bnsweep.results.status import format_status, sweep_status

    root, stages = sweep_status(str(path))
    format_status(root, stages)
    return stages


def loading(b) -> list[Row]:
    from bnsweep import results

    a = b.args
    root = Path(tempfile.mkdtemp(prefix="bnsweep-bench-"))
    rows = []
    try:
        exp_dir = root / "bench" / "main"
        t_write, _ = _timed(write_benchmark_experiment, exp_dir, a.load_trials, a.load_epochs)
        size_mb = sum(p.stat().st_size for p in exp_dir.rglob("*") if p.is_file()) / 1e6
        print(f"\n[loading] wrote {a.load_trials} trials x {a.load_epochs} epochs ({size_mb:.0f} MB) "
              f"in {t_write:.1f} s")
        for name, fn in (("load", results.load), ("history", results.history), ("status", _status)):
            times, frames = zip(*(_timed(fn, exp_dir) for _ in range(a.load_repeat)))
            shape = (f"{frames[0].shape[0]} rows x {frames[0].shape[1]} columns" if name != "status"
                     else f"{frames[0][0].trials} trials, {frames[0][0].epochs_done} epochs")
            print(f"{name:8s} {min(times):6.2f} s (best of {a.load_repeat}; all: "
                  f"{', '.join(f'{t:.2f}' for t in times)})  -> {shape}")
            rows.append({"function": name, "s": min(times),
                         "rows": frames[0].shape[0] if name != "status" else frames[0][0].trials})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows
