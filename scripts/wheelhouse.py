"""Build a wheelhouse to install bnsweep on a machine without network whose image already has torch.

    python scripts/wheelhouse.py WHEELHOUSE [--python PYTHON] [--glibc 2.28] [--have FILE] [--slim [--lzma]]

On a connected machine, with an interpreter of the target's Python version (pip evaluates the
requirements' markers, such as `python_version < "3.12"`, for the interpreter it runs on, whatever
`--python-version` says). Then, on the target:

    pip install --no-index --find-links WHEELHOUSE bnsweep

The wheelhouse holds bnsweep's wheel, every package it needs except those the target provides
(`--exclude`, default torch and torchvision, and what only they need: CUDA libraries, triton, ...),
and bnsweep's build requirements (so that a source checkout installs too:
`pip install --no-index --find-links WHEELHOUSE -e .`). How: one resolution of bnsweep's
requirements for the target (`pip install --dry-run --report`), a walk of the resolved packages'
dependencies from bnsweep that stops at the excluded ones, and `pip download --no-deps` of exactly
what the walk reached. `--have FILE` (the target's `pip list --format=freeze`, or names one a line)
leaves out what the target has too, for small upload limits; the target's versions must then satisfy
the requirements (pip says which one does not). `--slim` drops the parts of wheels that bnsweep
never loads (Ray's Java jars and dashboard page, pyautoattack's example model: scripts/slim_wheels.py).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # pip vendors it
    from pip._vendor.packaging.markers import default_environment  # type: ignore[no-redef,assignment]
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef,assignment]
    from pip._vendor.packaging.utils import canonicalize_name  # type: ignore[no-redef,assignment]

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def platforms(glibc: str, arch: str) -> list[str]:
    """pip's --platform tags for a Linux with this glibc: pip matches each tag exactly."""
    major, minor = (int(x) for x in glibc.split("."))
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 4, -1)]
    return tags + [f"{name}_{arch}" for name, (a, b) in LEGACY.items() if (a, b) <= (major, minor)]


def names_in(path: str) -> set[str]:
    """Package names in a `pip list --format=freeze` file (or one name a line; # comments)."""
    with open(path) as fh:
        lines = (re.split(r"[=<>~!@ ;\[]", line.split("#")[0].strip(), maxsplit=1)[0] for line in fh)
        return {canonicalize_name(n) for n in lines if n}


def pip(python: str, *args: str) -> None:
    subprocess.run([python, "-m", "pip", *args], check=True)


def requirements(wheel: str) -> list[Requirement]:
    """The Requires-Dist of a wheel (without extras' requirements)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    reqs = [Requirement(line.split(":", 1)[1]) for line in lines if line.startswith("Requires-Dist:")]
    return [r for r in reqs if not (r.marker and "extra" in str(r.marker))]


def reached(report: dict, roots: list[Requirement], leave: set[str]) -> tuple[dict[str, str], set[str]]:
    """Walk the resolved packages' dependencies from `roots`, stopping at names in `leave`; return
    {name: version} reached and the names in `leave` that were needed (the target must have them)."""
    found: dict[str, dict] = {canonicalize_name(i["metadata"]["name"]): i["metadata"] for i in report["install"]}
    env = {**default_environment(), **report["environment"]}
    extras: dict[str, set[str]] = {}
    needed_from_target: set[str] = set()
    todo = list(roots)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in leave:
            needed_from_target.add(name)
            continue
        new = set(req.extras) | {""}
        if not new - extras.get(name, set()):
            continue  # seen with these extras already
        extras[name] = extras.get(name, set()) | new
        if name not in found:
            raise SystemExit(f"{req} is needed but pip's resolution has no {name}: resolve with the target's Python")
        for line in found[name].get("requires_dist") or []:
            dep = Requirement(line)
            if dep.marker is None or any(dep.marker.evaluate({**env, "extra": e}) for e in extras[name]):
                todo.append(dep)
    return {n: found[n]["version"] for n in extras}, needed_from_target


def build(wheelhouse: str, python: str, glibc: str | None, exclude: set[str], have: set[str],
          slim: bool, lzma: bool) -> dict[str, str]:
    os.makedirs(wheelhouse, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:  # a copy: building leaves build/ and *.egg-info behind
        source = os.path.join(tmp, "bnsweep")
        shutil.copytree(os.path.join(ROOT, "bnsweep"), os.path.join(source, "bnsweep"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(os.path.join(ROOT, name), source)
        pip(python, "wheel", "--quiet", "--no-deps", "-w", wheelhouse, source)
    own = max(glob.glob(os.path.join(wheelhouse, "bnsweep-*.whl")), key=os.path.getmtime)
    import tomllib  # Python 3.11+

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        build_requires = [Requirement(r) for r in tomllib.load(fh)["build-system"]["requires"]]
    needs = requirements(own)
    roots = [r for r in needs if canonicalize_name(r.name) not in exclude | have]  # what pip resolves
    target = ["--only-binary=:all:"]
    if glibc:
        arch = subprocess.run([python, "-c", "import platform; print(platform.machine())"], check=True,
                              capture_output=True, text=True).stdout.strip()
        target += [f"--platform={tag}" for tag in platforms(glibc, arch)]
    with tempfile.TemporaryDirectory() as tmp:
        report_path = os.path.join(tmp, "report.json")
        pip(python, "install", "--dry-run", "--ignore-installed", "--quiet", "--report", report_path,
            "--target", os.path.join(tmp, "unused"), *target, *[str(r) for r in roots + build_requires])
        with open(report_path) as fh:
            report = json.load(fh)
    kept, from_target = reached(report, needs, exclude | have)
    kept.update(reached(report, build_requires, set())[0])  # build requirements even where the target has them
    pip(python, "download", "--quiet", "--no-deps", "-d", wheelhouse, *target,
        *[f"{name}=={version}" for name, version in sorted(kept.items())])
    if slim or lzma:
        import slim_wheels

        print("\n".join(slim_wheels.slim(wheelhouse, lzma)))
    size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(wheelhouse, "*.whl")))
    print(f"{wheelhouse}: bnsweep and {len(kept)} packages, {size / 2**20:.1f} MiB of wheels; "
          f"left to the target: {', '.join(sorted(from_target)) or 'nothing'}")
    print(f"install there: pip install --no-index --find-links {wheelhouse} bnsweep")
    return kept


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("wheelhouse", help="directory for the wheels (created; existing wheels stay)")
    p.add_argument("--python", default=sys.executable,
                   help="an interpreter of the target's Python version, to run pip (default: this one)")
    p.add_argument("--glibc", help="the target's glibc version (`ldd --version`), e.g. 2.28: wheels for "
                   "Linux up to it, on this machine's processor architecture (default: this machine's tags)")
    p.add_argument("--exclude", nargs="+", default=["torch", "torchvision"],
                   help="packages the target provides (default: torch torchvision)")
    p.add_argument("--have", help="a file of packages the target has too (`pip list --format=freeze` there)")
    p.add_argument("--slim", action="store_true",
                   help="drop what bnsweep never loads from the wheels (Ray's Java jars, ...: slim_wheels.py)")
    p.add_argument("--lzma", action="store_true", help="LZMA-compress every wheel (about a quarter smaller; pip only)")
    args = p.parse_args(argv)
    sys.path.insert(0, HERE)
    build(args.wheelhouse, args.python, args.glibc, {canonicalize_name(n) for n in args.exclude},
          names_in(args.have) if args.have else set(), args.slim, args.lzma)


if __name__ == "__main__":
    main()
