"""One checkpoint file per trial state: weights, optimiser, epoch, RNG, resolved config and metrics.

Files hold only tensors and plain Python values, so they load with `torch.load(weights_only=True)`:
a checkpoint crafted to run code when unpickled is refused instead of executed.
"""

from __future__ import annotations

import os
import pickle
import warnings
from typing import Any

import torch
from torch import nn

from bnsweep.core.choices import MAX_PARAMS
from bnsweep.errors import ConfigError

FILENAME = "checkpoint.pt"
FORMAT = 1
# weights and SGD momentum in float32 take 8 bytes per parameter: twice that for the largest model allowed
MAX_BYTES = 16 * MAX_PARAMS
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
    """Load a checkpoint safely; errors are ConfigErrors naming `key` and the path. Only a regular
    file of at most MAX_BYTES is read (a FIFO would hang the reader, a device fill the memory)."""
    from bnsweep.files import UnreadableFile, open_regular

    file = checkpoint_file(path)
    try:
        fh = open_regular(file, MAX_BYTES)
    except UnreadableFile as err:
        if err.problem == "does not exist":
            raise ConfigError(key, path, "an existing bnsweep checkpoint file or directory") from None
        raise ConfigError(key, path, f"a bnsweep checkpoint file ({file if file != path else 'this'} is "
                          f"{err.problem})") from None
    try:
        with fh, warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses
            warnings.simplefilter("ignore")
            state = torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message suggests weights_only=False: never pass that on
        raise ConfigError(key, path, "a bnsweep checkpoint (this file holds objects other than tensors and "
                          "plain values, which bnsweep refuses to unpickle)") from None
    except Exception as err:  # a file that is not a torch file at all fails in many ways
        raise ConfigError(key, path, f"a bnsweep checkpoint (this file is not a torch file: "
                          f"{type(err).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or not isinstance(state.get("model"), dict):
        raise ConfigError(key, path, "a bnsweep checkpoint (this file is not one)")
    return state


def check_weights(model: nn.Module, state: dict[str, Any], config: dict[str, Any], path: str,
                  key: str = "init") -> None:
    """Refuse the weights of checkpoint `path` when made for another architecture than `config`'s:
    the saved model and width first (the clearest message), then every tensor's name and shape
    against `model` (which may live on the meta device). Errors name `key` and `path`."""
    saved = state.get("config") or {}
    for k in ARCH_KEYS:
        if k in saved and saved[k] != config[k]:
            raise ConfigError(key, path, f"a checkpoint of {k}={config[k]!r}; this one was made with {k}={saved[k]!r}")
    weights, expected = state["model"], model.state_dict()
    problems = [f"{name} is missing" for name in expected if name not in weights]
    problems += [f"{name} has shape {tuple(getattr(weights[name], 'shape', ()))} in the checkpoint, "
                 f"{tuple(tensor.shape)} in the model" for name, tensor in expected.items()
                 if name in weights and getattr(weights[name], "shape", None) != tensor.shape]
    problems += [f"{name} is not in the model" for name in weights if name not in expected]
    if problems:
        more = f"; {len(problems) - 1} more tensors differ" if len(problems) > 1 else ""
        raise ConfigError(key, path, f"a checkpoint whose weights fit the model ({problems[0]}{more})")


def check_fits(path: str, model: str, width: float, num_classes: int, key: str = "init") -> None:
    """Load `path` and check its weights against the model built on the meta device (no memory, no
    compute), so a wrong checkpoint stops validation instead of a running trial."""
    from bnsweep.core.models import build_model

    with torch.device("meta"):
        target = build_model(model, num_classes, width=width)
    check_weights(target, load(path, key), {"model": model, "width": width}, path, key)


def load_weights(model: nn.Module, state: dict[str, Any], config: dict[str, Any], path: str,
                 key: str = "init") -> None:
    """Load the weights of checkpoint `path` into `model`, refusing one made for another architecture."""
    check_weights(model, state, config, path, key)
    model.load_state_dict(state["model"])
