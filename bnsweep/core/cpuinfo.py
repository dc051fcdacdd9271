"""The CPU's model name and feature flags (standard library only: provenance reports them without
torch).

Two CPUs with the same model name can differ in what matters to speed and to bf16 results: this
project's 2-core machines are all "AMD EPYC", some with AVX-512 BF16 and some with AVX2 only.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import sys

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo (lscpu) flags of native bf16
# what provenance names beside the CPU model: the vector and matrix extensions torch's CPU kernels use
NOTABLE_FLAGS = ("avx2", "avx512f", *CPU_BF16_FLAGS)


def _cpuinfo(field: str) -> str | None:
    """The value of the first `field` line of Linux's /proc/cpuinfo (None elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU model, e.g. `AMD EPYC 7B13` (Linux: /proc/cpuinfo; macOS: sysctl)."""
    name = _cpuinfo("model name")
    if name is not None:
        return name
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    return frozenset((_cpuinfo("flags") or "").split())


def notable_features() -> str | None:
    """`avx2 avx512f avx512_bf16`: the NOTABLE_FLAGS this CPU has, in that order (None where the
    flags cannot be read)."""
    flags = cpu_flags()
    return " ".join(f for f in NOTABLE_FLAGS if f in flags) if flags else None
