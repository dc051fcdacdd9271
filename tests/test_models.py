import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from bnsweep.core.choices import MODEL_NAMES, check_model_name
from bnsweep.core.models import Pointwise, build_model

# Small widths keep the big architectures fast on a CPU.
CASES = [("resnet8", 1.0), ("resnet20", 1.0), ("resnet32", 0.5), ("resnet56", 0.25),
         ("resnet110", 0.25), ("preact_resnet18", 0.125), ("wrn-16-1", 1.0), ("wrn-28-10", 0.05)]


def test_cases_cover_every_named_model():
    assert set(MODEL_NAMES) <= {name for name, _ in CASES}


@pytest.mark.parametrize("name,width", CASES)
def test_logits_shape_and_conventions(name, width):
    torch.manual_seed(0)
    model = build_model(name, 7, width=width)
    out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    assert isinstance(model.fc, nn.Linear) and model.fc.out_features == 7
    assert "fc.weight" in dict(model.named_parameters())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.bias is None for m in convs)
    norms = [m for m in model.modules()
             if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))]
    assert norms and all(type(m) is nn.BatchNorm2d for m in norms)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name,millions", [("resnet20", 0.27), ("resnet56", 0.86),
                                           ("preact_resnet18", 11.17), ("wrn-28-10", 36.5)])
def test_parameter_counts_match_the_published_architectures(name, millions):
    n = sum(p.numel() for p in build_model(name, 10).parameters())
    assert n / 1e6 == pytest.approx(millions, rel=0.02)


def test_width_scales_channels_and_half_width_works():
    model = build_model("resnet8", 10, width=0.5)
    assert model.conv1.out_channels == 8 and model.fc.in_features == 32
    assert build_model("resnet8", 10, width=0.01).conv1.out_channels == 1


def test_normalisation_is_inside_the_model():
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    model = build_model("resnet8", 10, mean=mean, std=std).eval()
    assert model.normalize.mean.shape == (1, 3, 1, 1)
    assert torch.allclose(model.normalize.std.flatten(), torch.tensor(std))
    assert {"normalize.mean", "normalize.std"} <= set(model.state_dict())
    plain = build_model("resnet8", 10, mean=(0, 0, 0), std=(1, 1, 1)).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items()
                           if not k.startswith("normalize.")}, strict=False)
    x = torch.rand(2, 3, 32, 32)
    x_norm = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(model(x), plain(x_norm), atol=1e-4)


@pytest.mark.parametrize("name,width", [("resnet20", 0.5), ("preact_resnet18", 0.125),
                                        ("wrn-16-2", 0.5)])
def test_channels_last_and_autocast(name, width):
    torch.manual_seed(0)
    model = build_model(name, 10, width=width).eval()
    x = torch.rand(4, 3, 32, 32)
    ref = model(x)
    cl = model.to(memory_format=torch.channels_last)
    assert torch.allclose(cl(x.contiguous(memory_format=torch.channels_last)), ref, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = cl(x.contiguous(memory_format=torch.channels_last))
    assert low.shape == (4, 10) and torch.isfinite(low).all()


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_pointwise_is_the_strided_1x1_convolution(memory_format):
    """Against nn.Conv2d with stride 2 in float64 NCHW, which never reaches the faulty oneDNN kernel
    (in NHWC float32 that reference itself would corrupt the heap)."""
    torch.manual_seed(0)
    pointwise = Pointwise(8, 16, stride=2).to(memory_format=memory_format)
    strided = nn.Conv2d(8, 16, 1, stride=2, bias=False).double()
    strided.weight.data.copy_(pointwise.weight.data)
    assert pointwise.state_dict().keys() == strided.state_dict().keys()
    images = torch.rand(3, 8, 16, 16)
    outs, grads = [], []
    for conv, x in ((pointwise, images.contiguous(memory_format=memory_format)), (strided, images.double())):
        x = x.clone().requires_grad_(True)
        out = conv(x)
        out.square().sum().backward()
        outs.append(out.double())
        grads.append((x.grad.double(), conv.weight.grad.double()))
    assert outs[0].shape == (3, 16, 8, 8)
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(*grads))
    # its input's gradient keeps the input's layout (slicing's would come back NCHW in an NHWC net;
    # autograd.grad returns it as computed, .grad of a leaf would be re-laid out)
    x = images.clone().contiguous(memory_format=memory_format).requires_grad_(True)
    (grad,) = torch.autograd.grad(pointwise(x).sum(), [x])
    assert grad.is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("name,width", CASES)
def test_no_model_runs_a_strided_1x1_convolution(name, width):
    """oneDNN's strided 1x1 backward-weights kernel corrupts the heap in NHWC (models.Pointwise)."""
    strided = [n for n, m in build_model(name, 10, width=width).named_modules()
               if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1)]
    assert strided == []


HEAP_CHECK = """
import torch
from bnsweep.core.models import build_model
torch.set_num_threads(2)
shortcut = build_model("resnet8", 10, width=0.5).layer2[0].shortcut[0].to(memory_format=torch.channels_last)
for _ in range(300):
    x = torch.rand(7, 8, 32, 32).contiguous(memory_format=torch.channels_last)
    shortcut(x).sum().backward()
"""


def test_nhwc_shortcut_backward_leaves_the_heap_intact():
    """resnet8 at width 0.5 has a stride-2 shortcut from 8 channels: as a strided nn.Conv2d, this
    loop dies with a corrupted heap (SIGSEGV or SIGBUS, torch 2.14.1 on AVX-512 and AVX2 CPUs)."""
    done = subprocess.run([sys.executable, "-c", HEAP_CHECK], env={**os.environ, "MALLOC_CHECK_": "3"},
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("name", ["resnet8", "resnet110", "preact_resnet18", "wrn-28-10",
                                  "wrn-10-1", "wrn-40-2"])
def test_check_model_name_accepts(name):
    check_model_name(name)


@pytest.mark.parametrize("name", ["resnet9", "wrn-27-2", "wrn-x", "wrn-28-0", "wrn-4-1",
                                  "WRN-28-10", "resnet18", ""])
def test_check_model_name_rejects_with_one_line(name):
    with pytest.raises(ValueError) as err:
        check_model_name(name)
    msg = str(err.value)
    assert repr(name) in msg and "resnet20" in msg and "wrn-D-W" in msg and "\n" not in msg
    with pytest.raises(ValueError):
        build_model(name, 10)
