"""The GPU checks in one call, on a GPU machine without network and without Ray.

    python3 scripts/gpu_study.py --out DIR --wheels .offline/wheels --data .offline/cifar10-jpeg.tar.gz
    python3 scripts/gpu_study.py --out DIR --data TINY.tar.gz --smoke-test        # on CPU, toy sizes

In order, each phase with its own time limit inside `--budget` (so a slow phase costs the later
ones their time, never the files already written), all through `bnsweep run` on a local Ray:
1. install: bnsweep from this checkout and what it needs from the carried wheelhouse
   (`pip install --no-index --find-links WHEELS -e .`; scripts/prepare_gpu_study.sh builds it);
2. study: sweeps/cifar10-gpu-short.yaml on the CIFAR-10 archive (`--data`);
3. bench: `python -m bnsweep.bench --part packing` (Ray Tune trials sharing the GPU);
4. demo: sweeps/demo.yaml with `gpu: 0.25` per trial and `device: auto`;
while `nvidia-smi` samples the GPU's busy share (utilization.gpu: the share of each 500 ms in which
a kernel ran) and memory. Then `bnsweep report` for each experiment; per phase and per stage the
busy share, and per stage the trials at once and a trial's training images/s; and everything packed
into DIR, at most 8 files (what a device call brings back): summary.json (read this first), log.txt,
gpu-util.csv, bench-packing.txt, experiments.tar.gz (experiment directories without checkpoints, and
the reports).
`--smoke-test` runs every phase at toy sizes on whatever device there is (tests/test_gpu_study.py).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHORT = ROOT / "sweeps" / "cifar10-gpu-short.yaml"
DEMO = ROOT / "sweeps" / "demo.yaml"
NEEDED = ("ray", "optuna", "tensorboardX", "pyautoattack", "jsonschema")
# Toy sizes of --smoke-test: every stage, every trial, a few seconds each on a CPU core. The final
# attack is PGD alone: AutoAttack on a toy model is no toy (a near-constant classifier leaves points
# no attack moves, and each gets every iteration of every attack).
TOY = ["n_train=40", "n_test=20", "width=0.25", "epochs=1", "batch_size=20", "eval_n=10", "eval_steps=1",
       "final_attack=pgd", "final_autoattack=none", "final_steps=1", "train_steps=1"]
# Time limits: a phase gets at most CAP seconds and leaves RESERVE seconds of the budget to those
# after it. The study comes first (it is what the run is for), then the benchmark, then the demo;
# the reports come last and can be made again from experiments.tar.gz (`bnsweep report`). On one
# H200 the study needed about 8 minutes (docs/studies/cifar10-gpu.md): in a call of 10 minutes it
# takes nearly all of it, and the benchmark and the demo get what is left (or a second call).
CAP = {"study": 480, "bench": 120, "demo": 110, "report": 45}
RESERVE = {"study": 30, "bench": 15, "demo": 10, "report": 5}


class Study:
    def __init__(self, args: argparse.Namespace):
        self.args, self.start = args, time.time()
        self.out = Path(args.out)
        self.work = Path(args.work or self.out.parent / f"{self.out.name}-work")
        self.results = self.work / "results"
        self.phases: list[dict] = []
        self.log = open(self.out / "log.txt", "a")

    def say(self, text: str) -> None:
        line = f"[{time.time() - self.start:6.0f} s] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def left(self) -> float:
        return self.args.budget - (time.time() - self.start)

    def run(self, name: str, argv: list[str], limit: float, stdout=None) -> int | None:
        """Run one phase's command, its output to the log (or `stdout`); past `limit` seconds it gets
        Ctrl-C (SIGINT to its process group, as a terminal sends it: a sweep then stops resumably),
        then SIGKILL. A phase with under 30 s left is skipped (None)."""
        if limit < 30:
            self.say(f"{name}: skipped, {limit:.0f} s left for it")
            self.phases.append({"phase": name, "skipped": True, "returncode": None, "seconds": 0})
            return None
        self.say(f"{name}: {' '.join(argv)} (at most {limit:.0f} s)")
        begun = time.time()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=stdout or self.log, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.say(f"{name}: over its {limit:.0f} s: interrupting")
            os.killpg(proc.pid, signal.SIGINT)
            try:
                rc = proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
        phase = {"phase": name, "start": begun, "end": time.time(), "seconds": round(time.time() - begun, 1),
                 "returncode": rc, "command": argv}
        self.phases.append(phase)
        self.say(f"{name}: exit {rc} after {phase['seconds']:.0f} s")
        return rc

    def limit(self, phase: str) -> float:
        return min(CAP[phase], self.left() - RESERVE[phase])


def install(study: Study) -> None:
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if not missing:
        study.say(f"install: nothing to do ({', '.join(NEEDED)} importable)")
        return
    if not study.args.wheels:
        raise SystemExit(f"missing {', '.join(missing)}: give --wheels (a wheelhouse: scripts/prepare_gpu_study.sh)")
    wheels = Path(study.args.wheels).resolve()
    pip = [sys.executable, "-m", "pip", "install", "--isolated", "--no-index", "--find-links", str(wheels)]
    if study.run("install", [*pip, "-e", str(ROOT)], limit=120):
        # a package of the image older than a requirement allows: install every wheel anyway, and say so
        study.say("install: WARNING: resolving failed (log.txt); installing every wheel without dependency checks")
        others = [str(w) for w in sorted(wheels.glob("*.whl")) if not w.name.startswith("bnsweep-")]
        if study.run("install --no-deps", [*pip, "--no-deps", *others, "-e", str(ROOT)], limit=120):
            raise SystemExit("install failed (log.txt): nothing else can run")
    importlib.invalidate_caches()


def demo_file(study: Study) -> Path:
    """sweeps/demo.yaml with a quarter GPU per trial and the device chosen by the trial."""
    import yaml

    doc = yaml.safe_load(DEMO.read_text())
    doc.update(name="demo-gpu", resources={"cpu": 1, "gpu": 0.25})
    doc["trial"]["device"] = "auto"
    path = study.work / "demo-gpu.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "bnsweep.cli", *args]


def sample_gpu(study: Study):
    """nvidia-smi every 500 ms in the background (None without nvidia-smi)."""
    if shutil.which("nvidia-smi") is None:
        study.say("no nvidia-smi: GPU busy share not sampled")
        return None
    out = open(study.out / "gpu-util.csv", "w")
    out.write("timestamp, utilization.gpu [%], memory.used [MiB]\n")
    out.flush()
    return subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,utilization.gpu,memory.used",
                             "--format=csv,noheader,nounits", "-lms", "500"], stdout=out, stderr=subprocess.DEVNULL)


def gpu_samples(study: Study) -> list[tuple[float, float, float]]:
    """(unix time, utilization %, memory MiB) from gpu-util.csv (nvidia-smi writes local time)."""
    path = study.out / "gpu-util.csv"
    rows = []
    if path.exists():
        for row in list(csv.reader(path.open()))[1:]:
            try:
                when = dt.datetime.strptime(row[0].strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
                rows.append((when, float(row[1]), float(row[2])))
            except (ValueError, IndexError):
                continue  # a line cut short when the sampler stopped
    return rows


def busy(samples: list[tuple[float, float, float]], start: float, end: float) -> dict:
    inside = [s for s in samples if start <= s[0] <= end]
    if not inside:
        return {"gpu_samples": 0}
    return {"gpu_samples": len(inside), "gpu_busy_mean_pct": round(sum(s[1] for s in inside) / len(inside), 1),
            "gpu_memory_max_mib": max(s[2] for s in inside)}


def stage_summary(root: Path, samples) -> list[dict]:
    """Per stage of an experiment: trials by status, wall time, a trial's training images/s (the
    mean of the epochs' `images_per_s`, training only), trials at once on average (their summed run
    time over the stage's wall time) and the GPU's busy share meanwhile."""
    import pandas as pd

    from bnsweep import results

    out: list[dict] = []
    if not root.exists():
        return out
    df, hist = results.load(str(root)), results.history(str(root))
    for stage, g in df.groupby("stage", sort=False):
        # a trial's start: its last report less its training time (Ray's start_time can be missing)
        begun = (g["timestamp"] - pd.to_timedelta(g["time_total_s"], unit="s")).dropna()
        if begun.empty:  # no trial of the stage reported (an interrupted sweep)
            out.append({"stage": stage, "trials": len(g), "statuses": g["status"].value_counts().to_dict()})
            continue
        start, end = begun.min().timestamp(), g["timestamp"].max().timestamp()
        rates = hist.loc[hist["stage"] == stage, "images_per_s"]
        row = {"stage": stage, "trials": len(g), "statuses": g["status"].value_counts().to_dict(),
               "wall_s": round(end - start, 1), "trial_images_per_s": round(float(rates.mean())),
               "trials_at_once": round(float(g["time_total_s"].sum()) / max(end - start, 1e-9), 2),
               "devices": sorted(g["device_used"].dropna().unique()) if "device_used" in g else [],
               **busy(samples, start, end)}
        out.append(row)
    return out


def pack(study: Study) -> None:
    """experiments.tar.gz: the experiments without checkpoints, and the reports."""
    def keep(info: tarfile.TarInfo):
        return None if "/checkpoint_" in info.name or info.name.endswith(".pt") else info

    with tarfile.open(study.out / "experiments.tar.gz", "w:gz") as tar:
        for path in sorted(study.work.iterdir()):
            tar.add(path, arcname=path.name, filter=keep)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="where the results go (at most 8 files)")
    p.add_argument("--work", help="experiments and reports (default: OUT-work beside OUT)")
    p.add_argument("--data", required=True, help="the CIFAR-10 image-folder archive (e.g. cifar10-jpeg.tar.gz)")
    p.add_argument("--wheels", help="wheelhouse to install Ray and the rest from, where they are missing")
    p.add_argument("--budget", type=float, default=550, help="seconds for everything (default 550)")
    p.add_argument("--smoke-test", action="store_true", help="toy sizes, to check that every phase runs")
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    study = Study(args)
    study.work.mkdir(parents=True, exist_ok=True)
    study.say(f"gpu_study: python {platform.python_version()}, {os.cpu_count()} CPUs, budget {args.budget:.0f} s"
              f"{', smoke test' if args.smoke_test else ''}")
    install(study)
    sys.path.insert(0, str(ROOT))
    import torch

    import bnsweep

    toy = TOY if args.smoke_test else []
    sampler = sample_gpu(study)
    try:
        # paths relative to the checkout (the commands run there): a record names the sweep file as
        # any checkout of the repository has it
        study.run("study", cli("run", str(SHORT.relative_to(ROOT)), "--storage", str(study.results), "--set",
                                   f"data_dir={Path(args.data).resolve()}", *toy), study.limit("study"))
        # long enough timed epochs that trials packed 8 to a GPU each train for seconds
        sizes = ["--smoke-test"] if args.smoke_test else ["--pack-counts", "1", "4", "8", "--pack-batches", "40",
                                                          "--pack-epochs", "5"]
        with open(study.out / "bench-packing.txt", "w") as bench_out:
            study.run("bench", [sys.executable, "-m", "bnsweep.bench", "--part", "packing", *sizes],
                      study.limit("bench"), stdout=bench_out)
        study.say("bench-packing.txt:\n" + (study.out / "bench-packing.txt").read_text()[-1500:])
        study.run("demo", cli("run", str(demo_file(study)), "--storage", str(study.results),
                              *(["--set", *toy] if toy else [])), study.limit("demo"))
    finally:
        if sampler is not None:
            sampler.send_signal(signal.SIGINT)
            sampler.wait()
    for name in ("cifar10-gpu-short", "demo-gpu"):
        if (study.results / name).exists():
            study.run(f"report {name}", cli("report", str(study.results / name), "-o",
                                                str(study.work / f"report-{name}")), study.limit("report"))
    samples = gpu_samples(study)
    summary: dict[str, Any] = {
        "when": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "bnsweep": bnsweep.code_version(),
        "python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "phases": [{**ph, **busy(samples, ph["start"], ph["end"])} if "start" in ph else ph for ph in study.phases],
        "stages": {name: stage_summary(study.results / name, samples) for name in ("demo-gpu", "cifar10-gpu-short")},
    }
    (study.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    pack(study)
    study.say("summary (summary.json):")
    for ph in summary["phases"]:
        study.say(f"  {ph['phase']:<28} exit {ph['returncode']!s:>4}  {ph['seconds']:>6.0f} s  "
                  f"GPU busy {ph.get('gpu_busy_mean_pct', '-')} %")
    for name, stages in summary["stages"].items():
        for s in stages:
            study.say(f"  {name}/{s['stage']:<10} {s['trials']:>3} trials {s['statuses']}  {s.get('wall_s', '-')} s, "
                      f"{s.get('trials_at_once', '-')} at once x {s.get('trial_images_per_s', '-')} img/s, GPU busy "
                      f"{s.get('gpu_busy_mean_pct', '-')} %  {', '.join(s.get('devices', []))}")
    return 0 if all(ph["returncode"] == 0 for ph in study.phases) else 1


if __name__ == "__main__":
    sys.exit(main())
