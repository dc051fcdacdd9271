"""scripts/gpu_study.py, the one-call GPU run of issue 22, at toy sizes on the CPU (`--smoke-test`):
every phase runs through `bnsweep run` and the benchmark, sweeps/cifar10-gpu-short.yaml among them,
and what comes back fits what a device call returns (at most 8 files)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import torch
from torchvision.io import encode_jpeg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from gpu_study import TOY  # noqa: E402,F401  (toy sizes, shared with test_sweepfiles.py)

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def tiny_cifar(path: Path, train: int = 4, test: int = 2) -> Path:
    """A .tar.gz of 32x32 JPEGs laid out as the CIFAR-10 copy: cifar10-jpeg/{train,test}/<class>/N.jpg."""
    gen = torch.Generator().manual_seed(0)
    with tarfile.open(path, "w:gz") as tar:
        for split, n in (("train", train), ("test", test)):
            for c, name in enumerate(CLASSES):
                for i in range(n):
                    image = torch.randint(0, 64, (3, 32, 32), generator=gen, dtype=torch.uint8) + 19 * c
                    data = encode_jpeg(image, quality=90).numpy().tobytes()
                    info = tarfile.TarInfo(f"cifar10-jpeg/{split}/{name}/{i:04d}.jpg")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return path


def test_gpu_study_smoke_test_runs_every_phase(tmp_path):
    """About 100 s on 2 cores: 36 trials, the packing benchmark, two reports."""
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_study.py"), "--out", str(out), "--data",
                          str(tiny_cifar(tmp_path / "cifar.tar.gz")), "--smoke-test", "--budget", "3000"],
                         capture_output=True, text=True, timeout=3600)
    log = (out / "log.txt").read_text() if (out / "log.txt").exists() else ""
    assert run.returncode == 0, run.stderr[-3000:] + log[-3000:]
    assert len(list(out.iterdir())) <= 8 and all(p.is_file() for p in out.iterdir())
    summary = json.loads((out / "summary.json").read_text())
    assert [p["phase"] for p in summary["phases"]] == ["study", "bench", "demo", "report cifar10-gpu-short",
                                                        "report demo-gpu"]
    stages = {s["stage"]: s for s in summary["stages"]["cifar10-gpu-short"]}
    assert {name: s["trials"] for name, s in stages.items()} == {"pretrain": 2, "adv": 16}
    assert all(s["statuses"] == {"terminated": s["trials"]} for s in stages.values())
    assert all(s["devices"] == (["cpu"] if not torch.cuda.is_available() else s["devices"]) for s in stages.values())
    assert [s["trials"] for s in summary["stages"]["demo-gpu"]] == [2, 16]
    assert "aggregate img/s" in (out / "bench-packing.txt").read_text()
    with tarfile.open(out / "experiments.tar.gz") as tar:
        names = tar.getnames()
        report = tar.extractfile("report-cifar10-gpu-short/report.md").read().decode()
    assert not [n for n in names if "checkpoint_" in n]  # weights stay behind: they do not fit
    assert "### Devices" in report and "| adv | cpu | " in report
