"""`dataset: folder`: image folders and archives of them, decoded once and cached, class-balanced
subsets, and every kind of bad input as one line (exit 2 from the command line)."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
import torch
from torchvision.io import encode_jpeg, encode_png

from bnsweep.cli import main
from bnsweep.core import folder
from bnsweep.core.config import make_config
from bnsweep.core.data import balanced_order, load_dataset
from bnsweep.errors import ConfigError, DataError
from bnsweep.sweep import driver as sweep_module

CPU = torch.device("cpu")
CLASSES = ("cat", "ant", "bee")  # sorted: ant, bee, cat
SHARED_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"  # ../shared/data
needs_archive = pytest.mark.skipif(not SHARED_ARCHIVE.exists(),
                                   reason=f"the JPEG copy of CIFAR-10 is not at {SHARED_ARCHIVE}")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Every test decodes into its own cache directory."""
    path = tmp_path / "cache"
    monkeypatch.setenv("BNSWEEP_CACHE_DIR", str(path))
    return path


def _image(label: int, index: int, size: int = 8) -> torch.Tensor:
    """Flat 4x4 blocks of random colours: distinct images that JPEG keeps close."""
    g = torch.Generator().manual_seed(100 * label + index)
    blocks = torch.randint(0, 256, (3, size // 4, size // 4), generator=g, dtype=torch.uint8)
    return blocks.repeat_interleave(4, 1).repeat_interleave(4, 2)


def make_tree(root: Path, train: int = 4, test: int = 2, classes=CLASSES) -> dict[str, torch.Tensor]:
    """train/<class>/ and test/<class>/ with PNGs (even indices) and JPEGs (odd); returns the PNGs'
    pixels by relative name, which must come back exactly."""
    pngs = {}
    for split, n in (("train", train), ("test", test)):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                img = _image(c + (10 if split == "test" else 0), i)
                if i % 2 == 0:
                    (root / split / name / f"{i:03d}.png").write_bytes(encode_png(img).numpy().tobytes())
                    pngs[f"{split}/{name}/{i:03d}.png"] = img
                else:
                    (root / split / name / f"{i:03d}.JPG").write_bytes(encode_jpeg(img, quality=95).numpy().tobytes())
    return pngs


def _load(source, n_train=0, n_test=0, seed=0):
    return load_dataset("folder", data_dir=str(source), download=False, n_train=n_train, n_test=n_test,
                        data_seed=seed, device=CPU)


def test_folder_of_png_and_jpeg(tmp_path):
    pngs = make_tree(tmp_path / "tree")
    raw = folder.load(str(tmp_path / "tree"))
    assert raw["classes"] == ["ant", "bee", "cat"]  # sorted class names are the labels
    assert raw["train_x"].shape == (12, 3, 8, 8) and raw["train_x"].dtype == torch.uint8
    assert raw["train_y"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert raw["test_y"].tolist() == [0] * 2 + [1] * 2 + [2] * 2
    # class then file order: train/cat/000.png is the first image of label 2
    assert torch.equal(raw["train_x"][8], pngs["train/cat/000.png"])
    assert torch.equal(raw["test_x"][0], pngs["test/ant/000.png"])
    def distance(a, b):
        return (a.float() - b.float()).abs().mean()

    jpeg = raw["train_x"][1]  # train/ant/001.JPG: lossy, but much closer to its source than to another
    assert 0 < distance(jpeg, _image(1, 1)) < distance(jpeg, _image(1, 3)) / 3

    ds = _load(tmp_path / "tree")
    assert ds.num_classes == 3 and ds.augment and ds.train_x.shape == (12, 3, 8, 8)
    assert sorted(ds.train_y.tolist()) == raw["train_y"].tolist()
    mean = raw["train_x"].double().div(255).mean((0, 2, 3))  # stats of the training split
    assert list(ds.mean) == pytest.approx(mean.tolist()) and all(0 < s < 1 for s in ds.std)


def test_archive_with_a_top_level_directory_equals_the_folder(tmp_path):
    make_tree(tmp_path / "data" / "tree")
    (tmp_path / "data" / "README.txt").write_text("not an image")
    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "data" / "tree", arcname="tree")
    plain = tmp_path / "tree.tar"
    with tarfile.open(plain, "w") as tf:  # no top-level directory
        for split in ("train", "test"):
            tf.add(tmp_path / "data" / "tree" / split, arcname=split)
    want = folder.load(str(tmp_path / "data" / "tree"))
    for source in (archive, plain, tmp_path / "data"):  # a directory may have one top level too
        got = folder.load(str(source))
        assert got["classes"] == want["classes"]
        assert all(torch.equal(got[k], want[k]) for k in ("train_x", "train_y", "test_x", "test_y"))
    inv = folder.inventory(str(archive))
    assert inv.classes == ("ant", "bee", "cat") and inv.counts == {"train": (4, 4, 4), "test": (2, 2, 2)}


def test_subsets_are_class_balanced_and_seeded(tmp_path):
    make_tree(tmp_path / "tree", train=6, test=4)
    ds = _load(tmp_path / "tree", n_train=7, n_test=6, seed=3)
    assert sorted(torch.bincount(ds.train_y, minlength=3).tolist()) == [2, 2, 3]
    assert torch.bincount(ds.test_y).tolist() == [2, 2, 2]
    assert sorted(ds.test_y[:3].tolist()) == [0, 1, 2]  # every prefix balanced (the eval_n examples)
    again, other = _load(tmp_path / "tree", 7, 6, seed=3), _load(tmp_path / "tree", 7, 6, seed=4)
    assert torch.equal(ds.train_x, again.train_x) and not torch.equal(ds.train_x, other.train_x)
    full = _load(tmp_path / "tree")
    assert len(full.train_y) == 18 and len(set(map(bytes, full.train_x.flatten(1).numpy()))) == 18


def test_balanced_order_with_unequal_classes():
    y = torch.tensor([0] * 2 + [1] * 10 + [2] * 10)
    idx = balanced_order(y, 12, seed=0)
    assert torch.bincount(y[idx]).tolist() == [2, 5, 5] and len(set(idx.tolist())) == 12
    everything = balanced_order(y, 0, seed=0)
    assert sorted(everything.tolist()) == list(range(22))
    assert sorted(y[everything[:6]].tolist()) == [0, 0, 1, 1, 2, 2]


def test_cache_is_reused_and_invalidated_by_a_changed_source(tmp_path, monkeypatch, cache):
    make_tree(tmp_path / "tree")
    first = folder.load(str(tmp_path / "tree"))
    assert len(list(cache.glob("tree-*.pt"))) == 1

    def no_decode(source):
        raise AssertionError("decoded again")

    monkeypatch.setattr(folder, "decode", no_decode)
    again = folder.load(str(tmp_path / "tree"))
    assert torch.equal(first["train_x"], again["train_x"])
    (tmp_path / "tree" / "train" / "ant" / "000.png").write_bytes(encode_png(_image(5, 5)).numpy().tobytes())
    with pytest.raises(AssertionError, match="decoded again"):
        folder.load(str(tmp_path / "tree"))


def _expect_data_error(source, *words):
    with pytest.raises(DataError) as err:
        folder.load(str(source))
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message
    return message


def test_bad_folders(tmp_path, cache):
    make_tree(tmp_path / "no-test")
    os.rename(tmp_path / "no-test" / "test", tmp_path / "no-test" / "valid")
    _expect_data_error(tmp_path / "no-test", "no test/<class>/", "train/ (3 classes)")

    make_tree(tmp_path / "mismatch")
    os.rename(tmp_path / "mismatch" / "test" / "bee", tmp_path / "mismatch" / "test" / "bea")
    _expect_data_error(tmp_path / "mismatch", "only in train: bee", "only in test: bea")

    make_tree(tmp_path / "corrupt")
    (tmp_path / "corrupt" / "test" / "bee" / "001.JPG").write_bytes(b"\xff\xd8\xff not really a jpeg")
    _expect_data_error(tmp_path / "corrupt", "test/bee/001.JPG", "not a readable PNG or JPEG")

    make_tree(tmp_path / "sizes")
    (tmp_path / "sizes" / "train" / "cat" / "002.png").write_bytes(encode_png(_image(0, 0, size=4)).numpy().tobytes())
    _expect_data_error(tmp_path / "sizes", "train/ant/000.png is 8x8", "train/cat/002.png is 4x4")

    _expect_data_error(tmp_path / "nowhere", "does not exist")
    (tmp_path / "notes.txt").write_text("hello")
    _expect_data_error(tmp_path / "notes.txt", "neither a directory nor a readable .tar")
    assert not list(cache.glob("*.pt"))  # nothing cached from a bad source

    make_tree(tmp_path / "small")
    with pytest.raises(ConfigError, match="n_train: 13 is not allowed; allowed: 0 .* at most 12 for the folder"):
        make_config({"dataset": "folder", "data_dir": str(tmp_path / "small"), "n_train": 13})


def test_bad_folder_stops_train_and_sweeps_before_anything_starts(tmp_path, capsys, monkeypatch):
    def no_ray(*args, **kwargs):
        raise AssertionError("Ray must not start for bad data")

    monkeypatch.setattr(sweep_module, "connect", no_ray)
    make_tree(tmp_path / "tree")
    os.rename(tmp_path / "tree" / "test" / "bee", tmp_path / "tree" / "test" / "bea")
    out = tmp_path / "out"
    assert main(["train", "--set", "dataset=folder", f"data_dir={tmp_path / 'tree'}", "--out", str(out)]) == 2
    assert "only in test: bea" in capsys.readouterr().err and not out.exists()

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"trial: {{dataset: folder, data_dir: {tmp_path / 'tree'}, model: resnet8}}\n"
                     "stages:\n  - name: pre\n  - name: adv\n    trial: {n_test: 50}\n")
    for argv in (["validate", str(sweep)], ["run", str(sweep), "--storage", str(tmp_path / "runs")]):
        assert main(argv) == 2
        line = capsys.readouterr().err.strip()
        assert len(line.splitlines()) == 1 and str(sweep) in line and "only in test: bea" in line, line
    os.rename(tmp_path / "tree" / "test" / "bea", tmp_path / "tree" / "test" / "bee")
    assert main(["validate", str(sweep)]) == 2  # now the n_test: 50 of stage adv is too many
    line = capsys.readouterr().err.strip()
    assert "stage 'adv'" in line and "n_test: 50" in line and "at most 6" in line
    assert not (tmp_path / "runs").exists()


def test_a_directory_is_listed_once_however_many_cells_validate_it(tmp_path, monkeypatch):
    make_tree(tmp_path / "tree")
    real_listed, listed = folder._listed, []

    def counting(source):
        listed.append(source)
        return real_listed(source)

    monkeypatch.setattr(folder, "_listed", counting)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"trial: {{dataset: folder, data_dir: {tmp_path / 'tree'}, model: resnet8}}\n"
                     "grid: {seed: [0, 1, 2, 3], lr: [0.1, 0.2]}\n")
    assert main(["validate", str(sweep)]) == 0
    assert listed == [str(tmp_path / "tree")]


def test_corrupt_image_in_train_is_one_line(tmp_path, capsys):
    make_tree(tmp_path / "tree")
    (tmp_path / "tree" / "train" / "cat" / "003.JPG").write_bytes(b"garbage")
    code = main(["train", "--set", "dataset=folder", f"data_dir={tmp_path / 'tree'}", "model=resnet8",
                 "width=0.25", "epochs=1", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "train/cat/003.JPG" in err, err


@needs_archive
def test_shared_cifar10_jpeg_archive_layout():
    """The real archive, listed without decoding (a few seconds)."""
    inv = folder.inventory(str(SHARED_ARCHIVE))
    assert inv.classes == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    assert inv.counts == {"train": (5000,) * 10, "test": (1000,) * 10}


@needs_archive
def test_shared_cifar10_jpeg_archive_decodes():
    """The real archive decoded (about 15 s on 2 idle cores): sizes, classes, the known test means."""
    ds = _load(SHARED_ARCHIVE)
    assert ds.train_x.shape == (50000, 3, 32, 32) and ds.test_x.shape == (10000, 3, 32, 32)
    assert ds.num_classes == 10
    assert torch.bincount(ds.train_y).tolist() == [5000] * 10 and torch.bincount(ds.test_y).tolist() == [1000] * 10
    test_mean = ds.test_x.double().div(255).mean((0, 2, 3))
    assert test_mean.tolist() == pytest.approx([0.494, 0.485, 0.450], abs=0.01)
