"""Part demo: `bnsweep run sweeps/demo.yaml` from start to exit, this checkout against another commit
of it, back to back on this machine.

The demo is what a newcomer runs first, so its speed is measured as they meet it: the whole command,
Ray's start and stop included, each run in a fresh process with a local Ray of its own. The other
commit runs from a temporary git worktree (its own code and its own `sweeps/demo.yaml`, imported
ahead of the installed bnsweep through PYTHONPATH); the runs alternate, the other commit first, and
the median of each side gives the ratio. A ratio measured across machines or sessions means nothing:
the CPU's bf16 support alone changes what `precision: auto` trains in.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from bnsweep import provenance
from bnsweep.bench.common import Bench, Row

SWEEP = os.path.join("sweeps", "demo.yaml")
WORKTREE_S = 300  # git worktree add/remove: a checkout of every file, records included


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("demo part (not in the default parts: it needs --demo-against)")
    g.add_argument("--demo-against", metavar="REV", help="the commit to compare this checkout with, "
                   "a git revision (e.g. 5717440, main~10)")
    g.add_argument("--demo-reps", type=int, default=1, help="runs of each side, alternating (median shown)")
    g.add_argument("--demo-set", nargs="+", metavar="KEY=VALUE", help="--set for both sides' runs (smoke tests)")


QUICK = dict(demo_set=["n_train=64", "n_test=32", "eval_n=16", "epochs=1"])


def check_against(rev: str) -> str | None:
    """Why `--demo-against rev` cannot run (checked before any part runs), or None."""
    try:
        provenance.git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except OSError:
        return "git is not installed; the demo part compares two commits of a git checkout"
    except subprocess.SubprocessError:
        return (f"{rev!r} is not a commit of {provenance.checkout()} (or that is no git checkout); "
                "allowed: a git revision of the bnsweep checkout, e.g. main~10")
    return None


def run_demo(tree: str, storage: str, overrides: list[str] | None) -> tuple[float, str]:
    """One `bnsweep run sweeps/demo.yaml` with `tree`'s code, start to exit: (seconds, precision the
    trials reported, or '-' where the code predates the key)."""
    command = [sys.executable, "-m", "bnsweep.cli", "run", SWEEP, "--storage", storage]
    env = {**os.environ, "PYTHONPATH": tree + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    done = subprocess.run(command + (["--set", *overrides] if overrides else []), cwd=tree, env=env,
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"the demo at {tree} exited {done.returncode}:\n{done.stderr[-2000:]}")
    found = re.search(r"\bprecision=(\w+)", done.stdout)
    return seconds, found.group(1) if found else "-"


def demo(b: Bench) -> list[Row]:
    """This checkout's demo against `--demo-against`'s, start to exit, alternating."""
    a = b.args
    code = provenance.code()
    against, this = provenance.git("rev-parse", "--short", f"{a.demo_against}^{{commit}}"), (code.commit or "")[:7]
    dirty = f" {provenance.DIRTY}" if code.dirty else ""
    print(f"\n== demo: bnsweep run {SWEEP}, start to exit, {against} against this checkout ({this}{dirty}), "
          f"alternating, {a.demo_reps} run(s) each ==")
    if a.demo_set:
        print(f"both with --set {' '.join(a.demo_set)}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bnsweep-bench-demo-") as tmp:
        tree = os.path.join(tmp, against)
        provenance.git("worktree", "add", "--detach", tree, against, timeout=WORKTREE_S)
        try:
            for rep in range(a.demo_reps):
                for side, label, checkout in (("against", against, tree), ("this", this, str(provenance.checkout()))):
                    seconds, precision = run_demo(checkout, os.path.join(tmp, f"results-{side}-{rep}"), a.demo_set)
                    rows.append({"side": side, "commit": label, "run": rep + 1, "seconds": seconds,
                                 "precision": precision})
                    print(f"run {rep + 1}  {label:<10} {seconds:>7.1f} s   trials trained in {precision}")
        finally:
            provenance.git("worktree", "remove", "--force", tree, timeout=WORKTREE_S)
    median = {side: statistics.median(r["seconds"] for r in rows if r["side"] == side) for side in ("against", "this")}
    ratio = median["this"] / median["against"]
    print(f"median: {against} {median['against']:.1f} s, {this} {median['this']:.1f} s; "
          f"{this} takes {ratio:.2f} of {against}'s time")
    return rows + [{"side": "ratio", "against": against, "commit": this, "ratio": ratio}]
