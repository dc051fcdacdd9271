"""The offline install (docs/guides/gpus.md, "Offline install"), end to end on this machine.

A wheelhouse is built with scripts/wheelhouse.py from the package index this machine reaches; then a
fresh virtual environment plays the GPU machine's image: it sees torch and torchvision, and what they
need, from this environment (through a .pth file naming a directory of links to them) and nothing
else. bnsweep is installed there with no index reachable (`--no-index`, `--isolated`, no pip
configuration), so the install proves the wheelhouse holds everything else, and a tiny sweep then
runs through Ray Tune with the slimmed Ray wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bnsweep import results

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import slim_wheels  # noqa: E402
import wheelhouse  # noqa: E402

IMAGE = ("torch", "torchvision")  # what a CUDA PyTorch image has


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without pip's settings and without PYTHONPATH (which names this checkout)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, **extra}


def installed(name: str) -> metadata.Distribution | None:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def closure(names: tuple[str, ...]) -> list[metadata.Distribution]:
    """The installed distributions `names` need, themselves included."""
    found: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        dist = None if name in found else installed(name)
        if dist is None:
            continue
        found[name] = dist
        todo += [Requirement(line).name for line in dist.requires or []]
    return list(found.values())


def image_venv(tmp: Path) -> Path:
    """A fresh venv whose only packages, besides pip, are IMAGE and what they need, linked from here.

    Each package's files are linked; its metadata is copied without the requirements that name
    packages not installed here: this environment's torch lists CUDA libraries under extras of
    cuda-toolkit that it lacks, which an image made by pip would have."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=clean_env())
    image = tmp / "image-site-packages"
    image.mkdir()
    for dist in closure(IMAGE):
        for top in {str(f).split("/")[0] for f in dist.files or []}:
            source, link = Path(dist.locate_file(top)), image / top
            if top.startswith("..") or top == "__pycache__" or top.endswith(".pth") or link.exists():
                continue
            if not top.endswith(".dist-info"):
                link.symlink_to(source)
                continue
            shutil.copytree(source, link)
            lines = (link / "METADATA").read_text().splitlines(keepends=True)
            (link / "METADATA").write_text("".join(
                line for line in lines
                if not line.startswith("Requires-Dist:") or installed(Requirement(line[14:].strip()).name)))
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "image.pth").write_text(f"{image}\n")
    return venv


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("offline")
    probe = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(tmp / "probe"),
                            f"pyyaml=={metadata.version('pyyaml')}"], capture_output=True, text=True, timeout=300)
    if probe.returncode:
        pytest.skip(f"no package index reachable to build a wheelhouse from: {probe.stderr.strip()[-300:]}")
    out = tmp / "wheelhouse"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "wheelhouse.py"), str(out), "--slim"],
                         capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "left to the target: " in run.stdout and "torch" in run.stdout.split("left to the target: ")[1]
    return out


def test_offline_install_from_the_wheelhouse_runs_a_sweep(built, tmp_path):
    wheels = {p.name.split("-")[0].lower().replace("_", "-"): p for p in built.glob("*.whl")}
    assert not {"torch", "torchvision", "triton"} & set(wheels), "the image's packages are not carried"
    assert not any(name.startswith("nvidia") for name in wheels)
    assert {"bnsweep", "ray", "optuna", "tensorboardx", "jsonschema", "pyautoattack", "setuptools"} <= set(wheels)
    for name in ("bnsweep", "pyautoattack"):  # wheels as --lzma writes them install too
        slim_wheels.rewrite(str(wheels[name]), (), lzma=True)
    venv = image_venv(tmp_path)
    python, env = str(venv / "bin" / "python"), clean_env(RAY_AUTH_MODE="disabled")
    install = subprocess.run([python, "-m", "pip", "install", "--isolated", "--no-index", "--find-links", str(built),
                              "bnsweep"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    where = subprocess.run([python, "-c", "import bnsweep, torch, ray, pyautoattack; "
                            "print(bnsweep.__file__, torch.__file__, ray.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert where[0].startswith(str(venv)) and where[2].startswith(str(venv))  # installed from the wheelhouse
    assert where[1].startswith(str(tmp_path / "image-site-packages"))  # the image's torch, not a new one
    assert not Path(where[2]).parent.joinpath("jars").exists()  # the slim Ray
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "tiny", "trial": {"dataset": "planted", "n_train": 32, "n_test": 16, "model": "resnet8", "width": 0.25,
                                  "batch_size": 32, "epochs": 1, "eval_n": 16, "eval_steps": 1, "train_steps": 1,
                                  "final_attack": "none"}}))
    run = subprocess.run([str(venv / "bin" / "bnsweep"), "run", str(sweep), "--storage", str(tmp_path / "r")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    df = results.load(str(tmp_path / "r" / "tiny"))
    assert list(df["status"]) == ["terminated"] and df["device_used"].iloc[0] == "cpu"
    # a checkout installs offline too (scripts/gpu_study.py does so): setuptools comes from the wheelhouse
    editable = subprocess.run([python, "-m", "pip", "install", "--isolated", "--no-index", "--find-links", str(built),
                               "-e", str(ROOT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert editable.returncode == 0, editable.stdout[-2000:] + editable.stderr[-2000:]
    where = subprocess.run([python, "-c", "import bnsweep; print(bnsweep.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where == str(ROOT / "bnsweep" / "__init__.py")


def test_platform_tags_and_package_lists(tmp_path):
    tags = wheelhouse.platforms("2.28", "x86_64")
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux_2_17_x86_64" in tags
    assert "manylinux_2_29_x86_64" not in tags
    assert {"manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"} <= set(tags)
    assert "manylinux2014_aarch64" not in wheelhouse.platforms("2.12", "aarch64")
    listing = tmp_path / "freeze.txt"
    listing.write_text("# the image\nTorch==2.11.0\npandas @ file:///x\ntyping_extensions\n\n")
    assert wheelhouse.names_in(str(listing)) == {"torch", "pandas", "typing-extensions"}


def test_the_walk_stops_at_what_the_target_has():
    """From bnsweep, dependencies reached only through an excluded package are left out."""
    def item(name, *requires):
        return {"metadata": {"name": name, "version": "1", "requires_dist": list(requires)}}

    report = {"environment": {"python_version": sysconfig.get_python_version()},
              "install": [item("bnsweep", "torch", "ray[tune]", "pandas"), item("torch", "triton", "filelock"),
                          item("triton"), item("filelock"), item("pandas", "numpy"), item("numpy"),
                          item("ray", "filelock", "pandas; extra == 'tune'", "pydantic; extra == 'serve'"),
                          item("pydantic")]}
    kept, left = wheelhouse.reached(report, [Requirement("bnsweep")], {"torch", "numpy"})
    assert set(kept) == {"bnsweep", "ray", "filelock", "pandas"} and left == {"torch", "numpy"}
