"""Data sets as uint8 tensors on the training device, with batching and augmentation done there.

Five data sets (``choices.DatasetName``): CIFAR-10 and CIFAR-100 through torchvision (downloaded
once under a file lock, because many Ray trials may start at once), ``folder`` (any image-folder data
set of PNG or JPEG files, decoded once and cached, see ``bnsweep.core.folder``), ``digits``
(scikit-learn's bundled 8x8 digits, upscaled to 32x32: real data, offline) and ``planted`` (synthetic
CIFAR-shaped data with planted robust and fragile features, see ``make_planted``), so the
fragile-versus-robust question can be studied offline on a CPU in minutes.

Following airbench, the whole split lives on the device as uint8 (N, 3, 32, 32); ``batches`` shuffles,
flips and crops there without DataLoader workers, which matters when Tune trials share a GPU and CPUs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bnsweep.core import folder
from bnsweep.core.choices import DatasetName
from bnsweep.errors import DataError

# Per-channel statistics of the [0, 1] CIFAR training images (the constants used across the literature).
_CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_CIFAR_FOLDERS = {
    "cifar10": ("cifar-10-batches-py", "cifar-10-python.tar.gz"),
    "cifar100": ("cifar-100-python", "cifar-100-python.tar.gz"),
}
# torchvision's files under data_dir (checked up front, so a missing file stops a sweep before it starts)
_CIFAR_FILES = {
    "cifar10": [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"],
    "cifar100": ["train", "test", "meta"],
}
PLANTED_DEFAULT_SIZES = (10000, 2000)  # (train, test) when n_train / n_test is 0
PLANTED_MAX = 100_000  # per split: generation holds n float32 images (1.2 GB at this size)
DIGITS_TEST_SIZE = 359  # of 1797 images: a stratified 1438 / 359 (80 / 20) split


@dataclass(frozen=True)
class Sizes:
    """What validation needs to know of a data set without loading it."""

    num_classes: int
    train: int  # the largest n_train (the split's size; planted: the most it generates)
    test: int


_SIZES = {
    "cifar10": Sizes(10, 50_000, 10_000),
    "cifar100": Sizes(100, 50_000, 10_000),
    "digits": Sizes(10, 1797 - DIGITS_TEST_SIZE, DIGITS_TEST_SIZE),
    "planted": Sizes(10, PLANTED_MAX, PLANTED_MAX),
}


def sizes(name: str, data_dir: str) -> Sizes:
    """Classes and split sizes of `name`; a folder data set's are read from `data_dir` (once per process)."""
    if name == DatasetName.FOLDER:
        found = folder.inventory(data_dir)
        return Sizes(len(found.classes), sum(found.counts["train"]), sum(found.counts["test"]))
    return _SIZES[name]


def train_size(name: str, data_dir: str, n_train: int) -> int:
    """Training images per epoch of a trial with this `n_train` (0: the whole split; planted: its default size)."""
    if n_train:
        return n_train
    return PLANTED_DEFAULT_SIZES[0] if name == DatasetName.PLANTED else sizes(name, data_dir).train


def missing_files(name: str, data_dir: str) -> str | None:
    """What `name` lacks under `data_dir` and how to get it (None: complete, or no files needed)."""
    if name not in _CIFAR_FILES:
        return None
    folder, archive = _CIFAR_FOLDERS[name]
    folder = os.path.join(os.path.abspath(os.path.expanduser(data_dir)), folder)
    missing = next((f for f in _CIFAR_FILES[name] if not os.path.isfile(os.path.join(folder, f))), None)
    return missing and (f"{os.path.join(folder, missing)} is missing; extract {archive} "
                        "(https://www.cs.toronto.edu/~kriz/cifar.html) there, or set download: true")


@dataclass(frozen=True)
class Dataset:
    """A whole data set on one device. Images are uint8 (N, 3, 32, 32); labels int64."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, float, float]  # per channel, of the [0, 1] training images
    std: tuple[float, float, float]
    augment: bool  # whether training should flip and crop (natural images: yes; synthetic: no)


def load_dataset(name: str, *, data_dir: str, download: bool, n_train: int, n_test: int,
                 data_seed: int, device: torch.device | str) -> Dataset:
    """Load `name` once, as uint8 tensors on `device`.

    n_train / n_test: 0 means the whole split (planted: its default size, ``PLANTED_DEFAULT_SIZES``).
    A positive value takes a subset chosen by `data_seed` (planted: generates that many; folder: a
    class-balanced one, see ``balanced_order``). `data_dir` is used by cifar10/cifar100 and folder.
    Raises DataError when files are missing, unreadable or cannot be downloaded, ValueError for an
    unknown name or a subset larger than the split.
    """
    if name == DatasetName.FOLDER:
        return _load_folder(data_dir, n_train, n_test, data_seed, device)
    if name in _CIFAR_STATS:
        (tx, ty), (vx, vy) = (_load_cifar(name, data_dir, download, train) for train in (True, False))
        mean, std = _CIFAR_STATS[name]
        num_classes, augment = (10 if name == DatasetName.CIFAR10 else 100), True
    elif name == DatasetName.DIGITS:
        (tx, ty), (vx, vy) = _load_digits(data_seed)
        num_classes, augment = 10, False
    elif name == DatasetName.PLANTED:
        tx, ty = make_planted(n_train or PLANTED_DEFAULT_SIZES[0], seed=data_seed, stream=0)
        vx, vy = make_planted(n_test or PLANTED_DEFAULT_SIZES[1], seed=data_seed, stream=1)
        num_classes, augment = 10, False
    else:
        raise ValueError(f"dataset: {name!r} is not allowed; allowed: {DatasetName.allowed()}")
    if name != DatasetName.PLANTED:
        tx, ty = _subset(tx, ty, n_train, data_seed, f"n_train: {n_train} is more than the "
                                                     f"{len(tx)} training images of {name}")
        vx, vy = _subset(vx, vy, n_test, data_seed + 1, f"n_test: {n_test} is more than the "
                                                        f"{len(vx)} test images of {name}")
    if name not in _CIFAR_STATS:
        mean, std = _channel_stats(tx)
    return Dataset(train_x=tx.to(device), train_y=ty.to(device), test_x=vx.to(device),
                   test_y=vy.to(device), num_classes=num_classes, mean=mean, std=std,
                   augment=augment)


def as_float(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1]: the one conversion (batches, evaluation, attacks)."""
    return x_uint8.float().div_(255)


def batches(x_uint8: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool,
            augment: bool, generator: torch.Generator | None = None
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (x float32 in [0, 1], y) batches on x's device; the last partial batch is kept.

    Random draws (the permutation, flips, crop offsets) come from `generator`, which may live on the
    CPU (recommended: the same seed then gives the same batches on every device) or on x's device;
    the small index tensors are moved to x's device. `augment` applies, per image, a horizontal flip
    with probability 1/2 and a random 32x32 crop of the image zero-padded by 4 pixels (the usual
    ``RandomCrop(32, padding=4)`` CIFAR recipe), vectorised on the device, on uint8 before scaling.
    """
    n, dev = len(x_uint8), x_uint8.device
    gdev = generator.device if generator is not None else torch.device("cpu")
    order = torch.randperm(n, generator=generator, device=gdev).to(dev) if shuffle else None
    for start in range(0, n, batch_size):
        idx = slice(start, start + batch_size) if order is None else order[start:start + batch_size]
        xb, yb = x_uint8[idx], y[idx]
        if augment:
            xb = _flip_crop(xb, generator, gdev)
        yield as_float(xb), yb


def balanced_order(y: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of n examples (0: all) drawn class-balanced with `seed`, in round-robin class order.

    Within each class the examples are shuffled; the k-th pick of every class comes before any
    (k+1)-th pick, with classes in a seeded order within a round. So every prefix, and in particular
    the first `eval_n` test examples, is balanced too: class counts differ by at most one, except
    where a class has run out of examples.
    """
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    shuffled = y[perm]
    by_class, where = torch.sort(shuffled, stable=True)
    counts = torch.bincount(shuffled)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(perm)
    rank[where] = torch.arange(len(y)) - starts[by_class]
    num_classes = int(y.max()) + 1
    class_slot = torch.randperm(num_classes, generator=g)
    order = torch.argsort(rank * num_classes + class_slot[shuffled])
    return perm[order][:n or len(y)]


def _flip_crop(x: torch.Tensor, generator: torch.Generator | None, gdev: torch.device,
               pad: int = 4) -> torch.Tensor:
    b, _, h, w = x.shape
    flip = (torch.rand(b, generator=generator, device=gdev) < 0.5).to(x.device)
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b), generator=generator, device=gdev).to(x.device)
    xp = F.pad(x, (pad, pad, pad, pad))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (b, h, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (b, 1, w)
    # Advanced indices around a slice put their dims first: (b, h, w, c) -> back to (b, c, h, w).
    out = xp[torch.arange(b, device=x.device)[:, None, None], :, rows, cols]
    return out.permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------------------------------------
# planted: synthetic data with robust and fragile features
# ---------------------------------------------------------------------------------------------

def make_planted(n: int, *, seed: int, stream: int = 0, num_classes: int = 10,
                 robust_255: float = 48.0, robust_flip: float = 0.15, robust_noise: float = 0.5,
                 robust_grid: int = 2, fragile_255: int = 4, fragile_tile: int = 2,
                 background_255: float = 4.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate n CIFAR-shaped images (uint8 (n, 3, 32, 32), CPU) and class-balanced int64 labels.

    The data set separates robust from fragile features, so the question "what does adversarial
    training need to learn?" can be studied offline in minutes. Each image is mid-grey (128) plus
    three parts, in units of 1/255:

    * robust feature, large and smooth: a class template, i.e. a colour field given by a
      ``robust_grid`` x ``robust_grid`` x 3 latent grid (templates orthogonal there when
      num_classes <= 3 * robust_grid**2, so all classes are equally far apart), bilinearly
      upsampled to 32x32, with RMS amplitude ``robust_255``, plus a per-example smooth variation
      of RMS ``robust_noise * robust_255``. On a fraction ``robust_flip`` of the examples the
      template shown is another class's (uniformly chosen), so this feature alone is not perfectly
      predictive: Bayes accuracy about 1 - robust_flip (85% by default, measured by a nearest-
      template classifier). An L-inf perturbation of 8/255 moves it too little to matter: the
      linear nearest-template classifier keeps its accuracy under exact worst-case 8/255 attacks.
    * fragile feature, small and high-frequency: a class-specific sign pattern of exactly
      +-``fragile_255`` (default 4) in every pixel and channel, a random ``fragile_tile`` x
      ``fragile_tile`` tile with zero mean per channel (no low-frequency content) repeated over the
      image. With the background noise it is still perfectly predictive by itself, but its L-inf
      size is below the usual radius 8/255, so an attacker can erase it or swap in another class's
      pattern. Standard training picks it up (it is the only way past ~85%), and is then not robust;
      adversarial training must fall back to the robust feature.
    * background: i.i.d. Gaussian pixel noise, standard deviation ``background_255``.

    Templates and fragile tiles come from `seed` only; labels and per-example draws come from
    (`seed`, `stream`), so train (stream 0) and test (stream 1) share classes but not examples.
    The same draws happen whatever the amplitude knobs (robust_*, fragile_255, background_255),
    so e.g. ``fragile_255=0`` gives the same images without the fragile pattern (which is added
    after rounding; it differs by less than fragile_255 only where clipping to [0, 255] bites).
    Generating 10k images takes well under a second.

    Shape:
        - x: uint8 (n, 3, 32, 32), values in [0, 255]; y: int64 (n,), values in [0, num_classes).

    Examples::
        >>> x, y = make_planted(1000, seed=0)              # training split
        >>> x_test, y_test = make_planted(200, seed=0, stream=1)
        >>> x.shape, y.bincount().tolist()
        (torch.Size([1000, 3, 32, 32]), [100, 100, 100, 100, 100, 100, 100, 100, 100, 100])
    """
    if not 0 <= fragile_255 <= 127 or fragile_255 != int(fragile_255):
        raise ValueError(f"fragile_255: {fragile_255!r} is not allowed; allowed: an integer 0..127")
    if fragile_tile < 2 or fragile_tile % 2 or 32 % fragile_tile:
        raise ValueError(f"fragile_tile: {fragile_tile!r} is not allowed; allowed: 2, 4, 8, 16, 32")
    if not 0 <= robust_flip <= 1:
        raise ValueError(f"robust_flip: {robust_flip!r} is not allowed; allowed: 0..1")
    if num_classes < 2:
        raise ValueError(f"num_classes: {num_classes!r} is not allowed; allowed: an integer >= 2")
    g = torch.Generator().manual_seed(seed)
    k = robust_grid * robust_grid
    latent = torch.randn(max(num_classes, 3 * k), 3 * k, generator=g)
    if num_classes <= 3 * k:  # orthogonal templates: every pair of classes equally far apart
        latent = torch.linalg.qr(latent.T).Q.T * (3 * k) ** 0.5
    latent = latent[:num_classes].view(num_classes, 3, k)
    half = fragile_tile * fragile_tile // 2  # balanced signs: zero mean in every tile and channel
    signs = torch.tensor([1.0] * half + [-1.0] * half)
    tiles = signs[torch.argsort(torch.rand(num_classes, 3, 2 * half, generator=g), dim=-1)]
    reps = 32 // fragile_tile
    fragile = tiles.view(num_classes, 3, fragile_tile, fragile_tile).repeat(1, 1, reps, reps)

    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, stream]).generate_state(1)[0]))
    y = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    shown = torch.where(torch.rand(n, generator=g) < robust_flip,
                        (y + torch.randint(1, num_classes, (n,), generator=g)) % num_classes, y)
    z = latent[shown].add_(torch.randn(n, 3, k, generator=g), alpha=robust_noise)
    x = torch.randn(n, 3, 32, 32, generator=g).mul_(background_255)
    x += (z @ (robust_255 * _upsampler(robust_grid)).T).view(n, 3, 32, 32)
    x = x.add_(128).round_().add_(fragile[y], alpha=fragile_255).clamp_(0, 255)
    return x.to(torch.uint8), y


def _upsampler(grid: int) -> torch.Tensor:
    """(1024, grid**2) matrix of bilinear upsampling grid x grid -> 32x32, scaled so that N(0, 1)
    latents give fields with unit RMS per pixel (the upsampling is linear, so a matmul is cheap)."""
    eye = torch.eye(grid * grid).view(-1, 1, grid, grid)
    up = F.interpolate(eye, size=(32, 32), mode="bilinear", align_corners=False).view(grid * grid, -1)
    return (up / up.pow(2).sum(0).mean().sqrt()).T.contiguous()


# ---------------------------------------------------------------------------------------------
# folder, digits, CIFAR, helpers
# ---------------------------------------------------------------------------------------------

def _load_folder(data_dir: str, n_train: int, n_test: int, data_seed: int,
                 device: torch.device | str) -> Dataset:
    data = folder.load(data_dir)
    folder.check_sizes(folder.Inventory.of(data), data_dir, n_train, n_test)
    train, test = (balanced_order(data[f"{s}_y"], n, data_seed + i)
                   for i, (s, n) in enumerate((("train", n_train), ("test", n_test))))
    mean, std = _channel_stats(data["train_x"])  # of the whole training split, like the CIFAR constants
    return Dataset(train_x=data["train_x"][train].to(device), train_y=data["train_y"][train].to(device),
                   test_x=data["test_x"][test].to(device), test_y=data["test_y"][test].to(device),
                   num_classes=len(data["classes"]), mean=mean, std=std, augment=True)


def _load_digits(seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    img = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16  # values 0..16
    img = F.interpolate(img, size=(32, 32), mode="bilinear", align_corners=False)
    x = (img * 255).round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.tensor(digits.target, dtype=torch.int64)
    i_train, i_test = train_test_split(np.arange(len(y)), test_size=DIGITS_TEST_SIZE,
                                       stratify=digits.target, random_state=seed)
    i_train, i_test = torch.from_numpy(i_train), torch.from_numpy(i_test)
    return (x[i_train], y[i_train]), (x[i_test], y[i_test])


def _load_cifar(name: str, data_dir: str, download: bool, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from filelock import FileLock
    from torchvision.datasets import CIFAR10, CIFAR100

    root = os.path.abspath(os.path.expanduser(data_dir))
    folder, archive = _CIFAR_FOLDERS[name]
    how = (f"{name} data not found or unreadable in {root}: run with download=true on a machine with "
           f"internet, or extract {archive} (https://www.cs.toronto.edu/~kriz/cifar.html) so that "
           f"{os.path.join(root, folder)} exists")
    cls = CIFAR10 if name == DatasetName.CIFAR10 else CIFAR100
    try:
        if download:
            os.makedirs(root, exist_ok=True)
            with FileLock(os.path.join(root, f".{name}.lock")):
                ds = cls(root=root, train=train, download=True)
        else:
            ds = cls(root=root, train=train, download=False)
    except (OSError, RuntimeError) as e:  # missing/corrupt files, or no internet (URLError)
        raise DataError(f"{how} ({type(e).__name__}: {e})".replace("\n", " ")) from e
    x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # HWC uint8 -> NCHW
    return x, torch.tensor(ds.targets, dtype=torch.int64)


def _subset(x: torch.Tensor, y: torch.Tensor, n: int, seed: int,
            too_many: str) -> tuple[torch.Tensor, torch.Tensor]:
    if n <= 0 or n == len(x):
        return x, y
    if n > len(x):
        raise ValueError(too_many)
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std of uint8 images scaled to [0, 1], exact, from per-channel histograms
    (no float copy of the images: 50,000 CIFAR images would need 1.2 GB in float64)."""
    counts = torch.stack([torch.bincount(x[:, c].reshape(-1), minlength=256) for c in range(3)]).double()
    values = torch.arange(256, dtype=torch.float64) / 255
    n = counts.sum(1)
    mean = (counts * values).sum(1) / n
    std = ((counts * (values - mean[:, None]) ** 2).sum(1) / (n - 1)).sqrt().clamp_min(1e-3)
    return tuple(mean.tolist()), tuple(std.tolist())  # type: ignore[return-value]
