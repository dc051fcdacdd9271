"""What the trial's device does fast, and the `auto` values of `precision` and `compile` it picks.

bf16 pays only where the hardware computes in it: on a CPU without AVX-512 BF16 or AMX, torch
runs bf16 convolutions through a slow fallback (about 10x slower than fp32 on a 2-core AMD EPYC,
`python -m bnsweep.bench --part cpu`), so `precision: auto` takes bf16 only with native support.
`torch.compile` needs a C++ compiler on CPUs and Triton on CUDA; its first compile of a model
takes tens of seconds, later ones load the compiled artefacts from the compile cache (seconds), so
`compile: auto` compiles where it can and the trial trains enough batches to earn it back.

Both are resolved in the process that trains (on a cluster, on the node that runs the trial), and
every trial reports what it ran with (metrics `precision` and `compile`).
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from bnsweep.core.choices import Precision
from bnsweep.core.cpuinfo import CPU_BF16_FLAGS, cpu_flags

AUTO = "auto"
# compile: auto compiles only trials of at least this many training batches: on the 2-core AMD
# EPYC a warm-cache compile costs about 5 s and saves about 0.2 s per PGD-3 batch of resnet8
# (width 1, batch 128), so it is earned back after about 25 batches; a cold one (about 60 s, once
# per machine and model) after about 300, i.e. within the first trials of a sweep.
AUTO_COMPILE_MIN_BATCHES = 100


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware: CUDA compute capability 8.0 or later (no
    emulation), a CPU with AVX-512 BF16 or AMX-BF16."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return any(flag in cpu_flags() for flag in CPU_BF16_FLAGS)
    return False


@functools.cache
def can_compile(device_type: str) -> bool:
    """Whether torch.compile's inductor back end can build kernels here: a C++ compiler for the
    CPU, Triton for CUDA (never on MPS)."""
    if device_type == "cuda":
        return importlib.util.find_spec("triton") is not None
    if device_type != "cpu":
        return False
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception:  # noqa: BLE001 - torch raises its own InvalidCxxCompiler, or fails to import
        return False
    return True


def resolve_precision(value: str, device: torch.device) -> str:
    """`precision` as it runs: `auto` is bf16 with native support, else fp32."""
    if value != AUTO:
        return value
    return Precision.BF16.value if native_bf16(device) else Precision.FP32.value


def resolve_compile(value: bool | str, device: torch.device, batches: int) -> bool:
    """`compile` as it runs: `auto` compiles where `can_compile` and the trial trains at least
    AUTO_COMPILE_MIN_BATCHES batches."""
    if value != AUTO:
        return bool(value)
    return can_compile(device.type) and batches >= AUTO_COMPILE_MIN_BATCHES


def compile_cache_dir() -> str:
    """Where torch.compile keeps its artefacts for bnsweep: `inductor/` in bnsweep's cache
    directory (`BNSWEEP_CACHE_DIR`, else `$XDG_CACHE_HOME/bnsweep`, else `~/.cache/bnsweep`)."""
    from bnsweep.core.folder import cache_dir

    return os.path.join(cache_dir(), "inductor")


def use_compile_cache() -> str:
    """Point torch.compile's on-disk caches (inductor's FX graph cache, AOTAutograd's cache,
    compiled kernels; Triton's on CUDA) at `compile_cache_dir()`, unless TORCHINDUCTOR_CACHE_DIR is
    set already, so that every trial process of a machine after the first reuses what the first
    compiled instead of compiling again (torch's default is a directory under /tmp, which cluster
    jobs often do not share or keep). Call before anything compiles; returns the directory used."""
    return os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", compile_cache_dir())
