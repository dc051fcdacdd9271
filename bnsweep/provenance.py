"""Where a number came from: the code (bnsweep version, git commit, uncommitted changes) and the
machine (CPU, cores, memory, GPUs and driver, Python, torch and Ray versions).

Written beside every published number, as airbench does: trials report `machine()` with every
result (`provenance/...` columns of `results.load`), so a record names the machine that RAN a
sweep, wherever and whenever it is made; `report.md`, run records and benchmark output name the
code that wrote them. Standard library only: `results` imports it without torch or Ray.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import bnsweep
from bnsweep.core.cpuinfo import cpu_name, notable_features

DIRTY = "with uncommitted changes"


@dataclass(frozen=True)
class Code:
    """The bnsweep that runs: its version and, from a git checkout, its commit."""

    version: str
    commit: str | None = None  # None: an installed package, or git missing
    dirty: bool = False  # uncommitted changes to tracked files of the checkout

    def __str__(self) -> str:
        """`0.1.0 (commit 1a2b3c...)`, `0.1.0 (commit 1a2b3c... with uncommitted changes)`."""
        if not self.commit:
            return self.version
        return f"{self.version} (commit {self.commit}{' ' + DIRTY if self.dirty else ''})"


COMMIT_ENV = "BNSWEEP_COMMIT"


def checkout() -> Path:
    """The folder bnsweep runs from: its git checkout, or site-packages for an installed package."""
    return Path(bnsweep.__file__).resolve().parent.parent


def git(*args: str, timeout: float = 10) -> str:
    """`git ARGS` in `checkout()`; its output, stripped. Raises OSError (no git) or
    subprocess.SubprocessError (a failing command, or one past `timeout` seconds)."""
    done = subprocess.run(["git", "-C", str(checkout()), *args], capture_output=True, text=True,
                          timeout=timeout, check=True)
    return done.stdout.strip()


def code() -> Code:
    """The version and git commit of the bnsweep checkout this runs from; no commit when bnsweep
    is not a git checkout of its own (an installed package, or bnsweep inside another repository).

    `$BNSWEEP_COMMIT`, where set, names the commit of a checkout copied to another machine whose
    git cannot tell: a copy without its .git, or with a stale one (a .git copied earlier than the
    tree, which then reports an older commit with uncommitted changes). Whoever copied the tree
    vouches that it is that commit, unchanged. Where the checkout's own HEAD is that commit, git's
    answer stands, uncommitted changes included."""
    told = Code(bnsweep.__version__, os.environ.get(COMMIT_ENV) or None)
    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != checkout():
            return told
        commit = git("rev-parse", "HEAD")
        if told.commit and told.commit != commit:
            return told
        changes = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return told
    return Code(bnsweep.__version__, commit, bool(changes))


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _gpus() -> tuple[list[str], str | None]:
    """(name of each GPU of the machine, NVIDIA driver version): nvidia-smi sees every GPU whatever
    CUDA_VISIBLE_DEVICES a Ray worker got; without it, what an already imported torch sees."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
        rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]
        return [r[0] for r in rows], (rows[0][1] if rows and len(rows[0]) > 1 else None)
    except (OSError, subprocess.SubprocessError):
        pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())], None
    return [], None


def _version(package: str) -> str | None:
    module = sys.modules.get(package)
    if module is not None and isinstance(getattr(module, "__version__", None), str):
        return module.__version__
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def machine() -> dict[str, Any]:
    """This machine and its software, as trials report it (`provenance` in every result) and
    benchmark output prints it. Constant per process, so computed once."""
    gpus, driver = _gpus()
    here = code()
    return {"host": socket.gethostname(), "cpu": cpu_name(), "cpu_features": notable_features(), "cpus": os.cpu_count(),
            "memory_gib": _memory_gib(), "gpu": ", ".join(dict.fromkeys(gpus)) or None,
            "gpus": len(gpus), "gpu_driver": driver, "python": platform.python_version(),
            "torch": _version("torch"), "ray": _version("ray"), "bnsweep": here.version,
            "commit": here.commit, "dirty": here.dirty}


def load_average() -> float | None:
    """The machine's 1-minute load average: how busy it was while a time was measured."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def describe_machine(m: dict[str, Any]) -> str:
    """One line: `AMD EPYC 7B13 (avx2 avx512f avx512_bf16), 2 CPUs, 23.4 GiB, no GPU; Python 3.11.7,
    torch 2.14.1, Ray 2.60.0` (the CPU's notable features where the trials reported them)."""
    def known(v: Any) -> bool:
        return v is not None and v == v and v != ""  # v == v: not NaN (a record's empty cell)

    parts = [str(m.get("cpu") or "unknown CPU") + (f" ({m['cpu_features']})" if known(m.get("cpu_features")) else "")]
    if known(m.get("cpus")):
        parts.append(f"{int(m['cpus'])} CPUs")
    if known(m.get("memory_gib")):
        parts.append(f"{float(m['memory_gib']):g} GiB")
    if known(m.get("gpus")) and int(m["gpus"]) > 0:
        gpu = f"{int(m['gpus'])}x {m.get('gpu') or 'GPU'}"
        parts.append(gpu + (f" (driver {m['gpu_driver']})" if known(m.get("gpu_driver")) else ""))
    else:
        parts.append("no GPU")
    software = [f"{name} {m[key]}" for key, name in (("python", "Python"), ("torch", "torch"), ("ray", "Ray"))
                if known(m.get(key))]
    return ", ".join(parts) + ("; " + ", ".join(software) if software else "")
