"""Image-folder data sets (`dataset: folder`): `train/<class>/*` and `test/<class>/*` PNG or JPEG
files in a directory or in a .tar / .tar.gz of one (possibly under one top-level directory, as
archives usually are). Labels are the sorted class folder names.

Images are decoded once (torchvision.io) into uint8 tensors and saved in a cache directory
(``BNSWEEP_CACHE_DIR``, else ``$XDG_CACHE_HOME/bnsweep``, else ``~/.cache/bnsweep``) under a file
lock, so the trials of one machine decode once: the first decodes, the others wait and then load
the cache (memory-mapped, so a subset reads only its own rows). The cache file's name holds a hash
of the source's path, file sizes and modification times, so a changed source is decoded anew.

`inventory` is the cheap check that config validation runs before anything starts (through
`data.sizes`): a missing split, classes that differ between train and test. A corrupt image or
images of different sizes are found while decoding; `check_sizes` checks a subset against what was
decoded.
"""

from __future__ import annotations

import functools
import hashlib
import os
import posixpath
import re
import tarfile
import warnings
from dataclasses import dataclass
from typing import Any

from bnsweep.errors import ConfigError, DataError

SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CACHE_VERSION = 1  # bump when the cache's contents change
LAYOUT = "a directory, .tar or .tar.gz holding train/<class>/* and test/<class>/* PNG or JPEG files"


@dataclass(frozen=True)
class Inventory:
    """What a folder data set holds: sorted class names and, per split, images per class."""

    classes: tuple[str, ...]
    counts: dict[str, tuple[int, ...]]

    @classmethod
    def of(cls, data: dict[str, Any]) -> Inventory:
        """The inventory of decoded data (what `load` returns)."""
        import torch

        classes = tuple(data["classes"])
        return cls(classes, {s: tuple(torch.bincount(data[f"{s}_y"], minlength=len(classes)).tolist())
                             for s in SPLITS})


# -- the source: a directory or an archive -------------------------------------------------------

def _is_image(name: str) -> bool:
    base = posixpath.basename(name)
    return not base.startswith(".") and base.lower().endswith(IMAGE_SUFFIXES)


def _dir_files(root: str) -> list[tuple[str, str]]:
    """(name relative to root in POSIX form, full path) of the images at most four levels down
    (top/split/class/file), hidden folders skipped."""
    out = []
    for here, dirs, files in os.walk(root):
        rel = os.path.relpath(here, root)
        depth = 0 if rel == "." else rel.count(os.sep) + 1
        dirs[:] = [] if depth >= 3 else sorted(d for d in dirs if not d.startswith("."))
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        out += [(prefix + f, os.path.join(here, f)) for f in files if _is_image(f)]
    return out


def _check_exists(source: str) -> None:
    if not os.path.exists(source):
        raise DataError(f"data_dir: {source!r} does not exist; allowed: {LAYOUT}")


def _open_archive(source: str) -> tarfile.TarFile:
    try:
        return tarfile.open(source, "r:*")
    except tarfile.TarError:
        raise DataError(f"data_dir: {source!r} is neither a directory nor a readable .tar/.tar.gz archive; "
                        f"allowed: {LAYOUT}") from None
    except OSError as err:
        raise DataError(f"data_dir: {source!r} cannot be read ({err}); allowed: {LAYOUT}") from None


def _member_images(tf: tarfile.TarFile):
    """(name, member) of every image file in an archive, names without a leading './'."""
    for member in tf:
        if member.isfile() and _is_image(member.name):
            yield member.name.removeprefix("./"), member


def _names(source: str) -> list[str]:
    if os.path.isdir(source):
        return [name for name, _ in _dir_files(source)]
    with _open_archive(source) as tf:
        return [name for name, _ in _member_images(tf)]


def _read(source: str) -> dict[str, bytes]:
    """Every image file's bytes, in one pass over the source."""
    if os.path.isdir(source):
        out = {}
        for name, path in _dir_files(source):
            with open(path, "rb") as fh:
                out[name] = fh.read()
        return out
    with _open_archive(source) as tf:
        return {name: tf.extractfile(member).read() for name, member in _member_images(tf)}


def _layout(names: list[str], source: str) -> tuple[tuple[str, ...], dict[str, list[list[str]]]]:
    """(sorted classes, {split: sorted file names per class}); DataError for a missing split or
    classes that differ between the splits."""
    parts = [name.split("/") for name in names]
    if any(len(p) == 3 and p[0] in SPLITS for p in parts):
        depth = 0
    else:
        tops = {p[0] for p in parts if len(p) == 4 and p[1] in SPLITS}
        depth = 1 if len(tops) == 1 else -1
    found: dict[str, dict[str, list[str]]] = {split: {} for split in SPLITS}
    for name, p in zip(names, parts):
        if depth >= 0 and len(p) == depth + 3 and p[depth] in SPLITS:
            found[p[depth]].setdefault(p[depth + 1], []).append(name)
    missing = [split for split in SPLITS if not found[split]]
    if missing:
        present = ", ".join(f"{s}/ ({len(found[s])} classes)" for s in SPLITS if found[s])
        present = f"; found: {present}" if present else ""
        raise DataError(f"data_dir: {source!r} has no {' or '.join(s + '/<class>/' for s in missing)} images"
                        f"{present}; allowed: {LAYOUT}")
    train, test = set(found["train"]), set(found["test"])
    if train != test:
        only = "; ".join(f"only in {s}: {', '.join(sorted(a - b)[:5])}"
                         for s, a, b in (("train", train, test), ("test", test, train)) if a - b)
        raise DataError(f"data_dir: {source!r}: train and test have different classes ({only}); "
                        "allowed: the same class folders in both")
    classes = tuple(sorted(train))
    return classes, {split: [sorted(found[split][c]) for c in classes] for split in SPLITS}


# -- cheap checks ------------------------------------------------------------------------------

def inventory(source: str) -> Inventory:
    """Classes and images per class, without decoding."""
    _check_exists(source)
    if os.path.isdir(source):
        return _directory_inventory(source)
    st = os.stat(source)
    return _archive_inventory(source, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _directory_inventory(source: str) -> Inventory:
    """Listed once per process (60,000 files take about 0.4 s), as validation asks once per grid
    cell; loading checks the subset sizes again against what it decoded."""
    return _listed(source)


@functools.lru_cache(maxsize=8)
def _archive_inventory(source: str, size: int, mtime_ns: int) -> Inventory:
    """From the archive's cache when there is one, else by listing it (which means decompressing a
    .tar.gz: seconds for 60,000 images), once per process and version of the archive."""
    path = cache_path(source)
    if os.path.exists(path):
        import torch

        return Inventory.of(torch.load(path, weights_only=True, mmap=True))
    return _listed(source)


def _listed(source: str) -> Inventory:
    classes, files = _layout(_names(source), source)
    return Inventory(classes, {split: tuple(len(f) for f in files[split]) for split in SPLITS})


def check_sizes(inv: Inventory, source: str, n_train: int, n_test: int, where: str = "") -> None:
    """A subset (n_train / n_test) must not be larger than its split."""
    for key, n, split in (("n_train", n_train, "train"), ("n_test", n_test, "test")):
        total = sum(inv.counts[split])
        if n > total:
            raise ConfigError(key, n, f"at most {total}, the {split} images in {source} (0: all)", where)


# -- decode and cache --------------------------------------------------------------------------

def cache_dir() -> str:
    if os.environ.get("BNSWEEP_CACHE_DIR"):
        return os.environ["BNSWEEP_CACHE_DIR"]
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bnsweep")


def cache_path(source: str) -> str:
    """The cache file of `source`: named after it, plus a hash of its real path and of the sizes
    and modification times of its files (an archive's own, a directory's images)."""
    digest = hashlib.sha256(f"folder v{CACHE_VERSION}\n{os.path.realpath(source)}\n".encode())
    files = _dir_files(source) if os.path.isdir(source) else [("", source)]
    for name, path in files:
        st = os.stat(path)
        digest.update(f"{name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(os.path.normpath(source)))
    return os.path.join(cache_dir(), f"{stem}-{digest.hexdigest()[:16]}.pt")


def load(source: str) -> dict[str, Any]:
    """{train_x, train_y, test_x, test_y (uint8 NCHW / int64, on the CPU), classes}, decoded on
    the first call on this machine and loaded from the cache after that."""
    import torch
    from filelock import FileLock

    _check_exists(source)
    path = cache_path(source)
    if not os.path.exists(path):
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with FileLock(path + ".lock"):
                if not os.path.exists(path):  # another process may have decoded it meanwhile
                    torch.save(decode(source), path + ".tmp")
                    os.replace(path + ".tmp", path)
        except OSError as err:
            raise DataError(f"cannot write the decoded-image cache {path} ({err}); "
                            "allowed: a writable BNSWEEP_CACHE_DIR") from None
    return torch.load(path, weights_only=True, mmap=True)


def decode(source: str) -> dict[str, Any]:
    """Decode every image (converted to RGB) of both splits, in class then file-name order."""
    import torch

    blobs = _read(source)
    classes, files = _layout(list(blobs), source)
    out: dict[str, Any] = {"classes": list(classes)}
    first: tuple[str, torch.Size] | None = None
    for split in SPLITS:
        images, labels = [], []
        for label, names in enumerate(files[split]):
            for name in names:
                image = _decode_image(blobs.pop(name), source, name)
                if first is None:
                    first = (name, image.shape)
                elif image.shape != first[1]:
                    raise DataError(f"data_dir: {source!r}: images differ in size: {first[0]} is "
                                    f"{_size(first[1])}, {name} is {_size(image.shape)}; "
                                    "allowed: images of one size (resize them first)")
                images.append(image)
                labels.append(label)
        out[f"{split}_x"] = torch.stack(images)
        out[f"{split}_y"] = torch.tensor(labels, dtype=torch.int64)
    return out


def _decode_image(data: bytes, source: str, name: str):
    import torch
    from torchvision.io import ImageReadMode, decode_image

    try:
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its image codecs in favour of TorchCodec, warning on every
            # call; they still work, and decode 32x32 JPEGs about twice as fast as Pillow (measured).
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"data_dir: {source!r}: {name} is not a readable PNG or JPEG image ({reason})") from None


def _size(shape) -> str:
    return f"{shape[-1]}x{shape[-2]}"
