"""The CPU's feature flags, read once (standard library only: provenance reports them without torch).

Two CPUs with the same model name can differ in what matters to speed and to bf16 results: this
project's 2-core machines are all "AMD EPYC", some with AVX-512 BF16 and some with AVX2 only.
"""

from __future__ import annotations

import functools

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo (lscpu) flags of native bf16
# what provenance names beside the CPU model: the vector and matrix extensions torch's CPU kernels use
NOTABLE_FLAGS = ("avx2", "avx512f", *CPU_BF16_FLAGS)


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def notable_features() -> str | None:
    """`avx2 avx512f avx512_bf16`: the NOTABLE_FLAGS this CPU has, in that order (None where the
    flags cannot be read)."""
    flags = cpu_flags()
    return " ".join(f for f in NOTABLE_FLAGS if f in flags) if flags else None
