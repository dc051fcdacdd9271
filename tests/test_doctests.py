"""The docstring examples of the trial core run as written (doctest), on a small random ResNet-8 and
planted images: an example that drifts from the code fails here."""

from __future__ import annotations

import doctest

import pytest
import torch

from bnsweep.core import attacks, data, evaluate
from bnsweep.core.data import as_float, make_planted
from bnsweep.core.models import build_model


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("resnet8", 10, width=0.25).eval()


def _images() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = make_planted(16, seed=0)
    return x, y


GLOBS = {  # what each module's examples assume: a model, and images (floats for attacks, uint8 for evaluate)
    "attacks": lambda: {"model": _model(), "x": as_float(_images()[0]), "y": _images()[1]},
    "data": lambda: {},
    "evaluate": lambda: {"model": _model(), "x": _images()[0], "y": _images()[1]},
}


@pytest.mark.parametrize("module", [attacks, data, evaluate], ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, extraglobs=GLOBS[module.__name__.rsplit(".", 1)[-1]](),
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0, result
