"""Architectures for the sweeps: CIFAR ResNets, PreActResNet-18 and WideResNets.

Every model takes images in [0, 1] and normalises them itself (a first ``Normalize`` module with
``mean``/``std`` buffers), so attack radii are in pixel space for every data set. Conventions the rest
of bnsweep relies on: convolutions have no bias, the only normalisation layers are plain
``nn.BatchNorm2d`` (so "train only BatchNorm" is well defined), the classifier is the ``nn.Linear``
attribute ``fc``, and the forward pass returns raw logits. Top-level modules are registered in
forward order, and the residual stages are the ones named ``layer1`` ... ``layerN``: what comes
before them is the stem, what comes after them the head (the places `trainable` expressions name).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bnsweep.core.choices import MAX_PARAMS, RESNET_DEPTHS, check_model_name, parse_wrn


def _channels(base: int, width: float) -> int:
    return max(1, round(base * width))


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class Pointwise(nn.Conv2d):
    """The shortcut's 1x1 convolution with a stride, computed as a stride-1 1x1 convolution of every
    `subsample`-th pixel: the same function and parameters (state-dict keys and shapes of an
    ``nn.Conv2d``), but oneDNN never runs its strided 1x1 kernels. Their backward-weights pass writes
    past its workspace in channels_last when in_channels is below the kernel's channel block (16 on
    AVX-512, 8 on AVX2), which corrupts the heap or the weight gradients (uxlfoundation/oneDNN#6035,
    seen with torch 2.14.1 on CPUs at width 0.5 and below). The pixels are picked by a 1x1 average
    pooling, not by slicing: slicing's backward returns an NCHW gradient into a channels_last
    network, and every elementwise op that meets both layouts runs ten times slower."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__(c_in, c_out, 1, bias=False)
        self.subsample = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The 1x1 convolution of every `subsample`-th pixel in each direction."""
        if self.subsample > 1:
            x = F.avg_pool2d(x, 1, stride=self.subsample)
        return super().forward(x)

    def extra_repr(self) -> str:
        """The printed module says it subsamples (its own stride is 1)."""
        return f"{super().extra_repr()}, subsample={self.subsample}"


class Normalize(nn.Module):
    """(x - mean) / std with per-channel buffers of shape (1, 3, 1, 1), saved in the state dict."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel (x - mean) / std: the model normalises its [0, 1] input itself."""
        return (x - self.mean) / self.std


# ---------------------------------------------------------------------------------------------
# CIFAR ResNets (He et al. 2016): 6n+2 layers, post-activation BasicBlocks, 1x1 conv+BN shortcuts
# ---------------------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    """The CIFAR ResNet block (He et al. 2016): two 3x3 convolutions, BN after each, identity or 1x1 shortcut."""
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = _conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:  # option B, as in open_lth
            self.shortcut = nn.Sequential(Pointwise(c_in, c_out, stride), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output: ReLU of the two convolutions plus the shortcut."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images (He et al. 2016, section 4.2): stem, three stages, pooling, `fc`."""
    def __init__(self, depth: int, num_classes: int, width: float, norm: Normalize):
        super().__init__()
        self.normalize = norm
        n = (depth - 2) // 6
        c1, c2, c3 = (_channels(c, width) for c in (16, 32, 64))
        self.conv1 = _conv3x3(3, c1)
        self.bn1 = nn.BatchNorm2d(c1)
        self.layer1 = _stage(BasicBlock, c1, c1, n, stride=1)
        self.layer2 = _stage(BasicBlock, c1, c2, n, stride=2)
        self.layer3 = _stage(BasicBlock, c2, c3, n, stride=2)
        self.fc = nn.Linear(c3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of images in [0, 1]."""
        out = F.relu(self.bn1(self.conv1(self.normalize(x))))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def _stage(block: type[nn.Module], c_in: int, c_out: int, n: int, stride: int) -> nn.Sequential:
    return nn.Sequential(*(block(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1)
                           for i in range(n)))


# ---------------------------------------------------------------------------------------------
# PreActResNet-18 (He et al. 2016b), as in locuslab/fast_adversarial and robust_overfitting
# ---------------------------------------------------------------------------------------------

class PreActBlock(nn.Module):
    """The pre-activation block (He et al. 2016b): BN and ReLU before each convolution."""
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = _conv3x3(c_out, c_out)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = Pointwise(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output: the two pre-activated convolutions plus the shortcut."""
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """PreAct ResNet-18, the usual network of adversarial-training papers on CIFAR."""
    def __init__(self, num_classes: int, width: float, norm: Normalize):
        super().__init__()
        self.normalize = norm
        c = [_channels(b, width) for b in (64, 128, 256, 512)]
        self.conv1 = _conv3x3(3, c[0])
        self.layer1 = _stage(PreActBlock, c[0], c[0], 2, stride=1)
        self.layer2 = _stage(PreActBlock, c[0], c[1], 2, stride=2)
        self.layer3 = _stage(PreActBlock, c[1], c[2], 2, stride=2)
        self.layer4 = _stage(PreActBlock, c[2], c[3], 2, stride=2)
        self.bn = nn.BatchNorm2d(c[3])
        self.fc = nn.Linear(c[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of images in [0, 1]."""
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(self.normalize(x))))))
        out = F.relu(self.bn(out))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


# ---------------------------------------------------------------------------------------------
# WideResNet-D-W (Zagoruyko & Komodakis 2016): the same pre-activation blocks, no dropout
# ---------------------------------------------------------------------------------------------

class WideResNet(nn.Module):
    """WRN-D-W (Zagoruyko & Komodakis 2016): pre-activation blocks, W times wider."""
    def __init__(self, depth: int, widen: int, num_classes: int, width: float, norm: Normalize):
        super().__init__()
        self.normalize = norm
        n = (depth - 4) // 6
        c0 = _channels(16, width)
        c1, c2, c3 = (_channels(b * widen, width) for b in (16, 32, 64))
        self.conv1 = _conv3x3(3, c0)
        self.layer1 = _stage(PreActBlock, c0, c1, n, stride=1)
        self.layer2 = _stage(PreActBlock, c1, c2, n, stride=2)
        self.layer3 = _stage(PreActBlock, c2, c3, n, stride=2)
        self.bn = nn.BatchNorm2d(c3)
        self.fc = nn.Linear(c3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of images in [0, 1]."""
        out = self.layer3(self.layer2(self.layer1(self.conv1(self.normalize(x)))))
        out = F.relu(self.bn(out))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def parameter_count(name: str, width: float = 1.0, num_classes: int = 10) -> int:
    """Parameters of `name` at `width`, counted on the meta device (no memory; wrn-1000-1 takes 3 s)."""
    return sum(p.numel() for p in skeleton(name, num_classes, width=width).parameters())


def check_size(name: str, width: float, num_classes: int = 10) -> None:
    """Raise ValueError (one line) when `name` at `width` has more than MAX_PARAMS parameters."""
    check_model_name(name)
    n = parameter_count(name, width, num_classes)
    if n > MAX_PARAMS:
        raise ValueError(f"model: {name!r} is not allowed; allowed: a model of at most {MAX_PARAMS:,} "
                         f"parameters (at width {width:g} it has {n:,})")


def build_model(name: str, num_classes: int, *, width: float = 1.0,
                mean: Sequence[float] = (0.5, 0.5, 0.5),
                std: Sequence[float] = (0.25, 0.25, 0.25)) -> nn.Module:
    """Build `name` for inputs in [0, 1]; the model normalises internally with (mean, std).

    `width` scales every channel count (max(1, round(c * width))), so width 0.5 gives a cheap
    resnet8 for CPU demos and width 1 reproduces the published architectures. The first submodule
    is ``normalize`` (buffers ``normalize.mean``/``normalize.std``); the classifier is ``model.fc``.
    """
    model = _architecture(name, num_classes, width, mean, std)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model


def skeleton(name: str, num_classes: int = 10, *, width: float = 1.0) -> nn.Module:
    """`name` on the meta device: parameter names and shapes, no memory and no initialisation, for
    checking `trainable` expressions before anything runs (random init on meta would import
    torch._dynamo, seconds for nothing)."""
    with torch.device("meta"):
        return _architecture(name, num_classes, width, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _architecture(name: str, num_classes: int, width: float, mean: Sequence[float],
                  std: Sequence[float]) -> nn.Module:
    check_model_name(name)
    if not width > 0:
        raise ValueError(f"width: {width!r} is not allowed; allowed: a number > 0")
    norm = Normalize(mean, std)
    if name in RESNET_DEPTHS:
        return CifarResNet(RESNET_DEPTHS[name], num_classes, width, norm)
    if name == "preact_resnet18":
        return PreActResNet18(num_classes, width, norm)
    depth, widen = parse_wrn(name)  # type: ignore[misc]  # validated by check_model_name
    return WideResNet(depth, widen, num_classes, width, norm)
