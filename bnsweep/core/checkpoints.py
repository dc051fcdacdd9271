"""One checkpoint file per trial state: weights, optimiser, epoch, RNG, resolved config and metrics.

Files hold only tensors and plain Python values, so they load with `torch.load(weights_only=True)`:
a checkpoint crafted to run code when unpickled is refused instead of executed.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from bnsweep.errors import ConfigError

FILENAME = "checkpoint.pt"
FORMAT = 1
ARCH_KEYS = ("model", "width")


def checkpoint_file(path: str) -> str:
    """A checkpoint file, or a directory holding one (as Ray Tune's checkpoint directories do)."""
    return os.path.join(path, FILENAME) if os.path.isdir(path) else path


def save(path: str, state: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)


def load(path: str, key: str = "init") -> dict[str, Any]:
    """Load a checkpoint safely; errors are ConfigErrors naming `key` and the path."""
    file = checkpoint_file(path)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(key, path, "an existing bnsweep checkpoint file or directory") from None
    except Exception as err:  # weights_only unpickling fails in many ways on a file that is not a checkpoint
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(key, path, f"a bnsweep checkpoint loadable with weights_only=True ({first})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise ConfigError(key, path, "a bnsweep checkpoint (this file is not one)")
    return state


def load_weights(model: nn.Module, state: dict[str, Any], config: dict[str, Any], key: str = "init") -> None:
    """Load the checkpoint's weights into `model`, refusing one made for another architecture."""
    saved = state.get("config", {})
    for k in ARCH_KEYS:
        if k in saved and saved[k] != config[k]:
            raise ConfigError(key, config.get("init", ""), f"a checkpoint of {k}={config[k]!r}; "
                              f"this one was made with {k}={saved[k]!r}")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise ConfigError(key, config.get("init", ""), "a checkpoint whose weights fit the model "
                          f"({str(err).splitlines()[0]})") from None

