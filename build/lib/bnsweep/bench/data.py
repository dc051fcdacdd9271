"""Part data: a folder data set's first decode (what the first trial on a machine pays) against a
load from the decoded-image cache (what every later trial pays), on `--data-source` (an image folder
or a .tar/.tar.gz of one) or on a generated folder of `--data-images` 32x32 JPEGs."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

Row = dict[str, Any]
QUICK = dict(data_images=60, data_repeat=1)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-source", help="image folder or .tar/.tar.gz of one (data; default: generated)")
    p.add_argument("--data-images", type=int, default=6000, help="images of the generated folder (data)")
    p.add_argument("--data-repeat", type=int, default=3, help="timed cached loads (data; the best is shown)")


def generate_folder(root: Path, n: int, classes: int = 10) -> None:
    """n random 32x32 JPEGs, 5/6 in train/<class>/ and 1/6 in test/<class>/."""
    from torchvision.io import encode_jpeg

    g = torch.Generator().manual_seed(0)
    for i in range(n):
        split = "test" if i % 6 == 5 else "train"
        path = root / split / f"c{i // 6 % classes}"
        path.mkdir(parents=True, exist_ok=True)
        image = torch.randint(0, 256, (3, 32, 32), generator=g, dtype=torch.uint8)
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its codecs (they still work)
            warnings.simplefilter("ignore", DeprecationWarning)
            (path / f"{i:06d}.jpg").write_bytes(encode_jpeg(image, quality=75).numpy().tobytes())


def _timed(fn) -> tuple[tuple[float, float], Any]:
    """((wall s, CPU s of this process), result): CPU time tells an idle machine's cost on a shared one."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - wall, time.process_time() - cpu), out


def data(b) -> list[Row]:
    from bnsweep.core.data import load_dataset

    a = b.args
    tmp = Path(tempfile.mkdtemp(prefix="bnsweep-bench-data-"))
    saved = os.environ.get("BNSWEEP_CACHE_DIR")
    os.environ["BNSWEEP_CACHE_DIR"] = str(tmp / "cache")  # a cold cache, removed afterwards
    try:
        source = a.data_source
        if not source:
            source = str(tmp / "generated")
            generate_folder(Path(source), a.data_images)

        def load():  # what a trial does: whole splits, on the CPU (cache, order, channel statistics)
            return load_dataset("folder", data_dir=os.path.abspath(source), download=False, n_train=0,
                                n_test=0, data_seed=0, device="cpu")

        (first, first_cpu), ds = _timed(load)
        cached = [_timed(load)[0] for _ in range(a.data_repeat)]
        best = min(cached)
        size_mb = sum(p.stat().st_size for p in (tmp / "cache").glob("*.pt")) / 1e6
        print(f"\n[data] {source}: {len(ds.train_y)} train + {len(ds.test_y)} test images, "
              f"{ds.num_classes} classes, {tuple(ds.train_x.shape[1:])}; cache {size_mb:.0f} MB; "
              "seconds of wall (CPU) time")
        print(f"first decode {first:7.2f} s ({first_cpu:.2f})   | cached load {best[0]:6.2f} s ({best[1]:.2f}; "
              f"best of {a.data_repeat})   | speed-up {first / best[0]:.0f}x")
        return [{"source": source, "images": len(ds.train_y) + len(ds.test_y), "first_s": first,
                 "first_cpu_s": first_cpu, "cached_s": best[0], "cached_cpu_s": best[1], "cache_mb": size_mb}]
    finally:
        if saved is None:
            os.environ.pop("BNSWEEP_CACHE_DIR", None)
        else:
            os.environ["BNSWEEP_CACHE_DIR"] = saved
        shutil.rmtree(tmp, ignore_errors=True)
