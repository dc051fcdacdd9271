import hashlib
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.datasets.cifar as tv_cifar
from torchvision.datasets import CIFAR10, CIFAR100

from bnsweep.core.data import DataError, batches, load_dataset, make_planted
from bnsweep.core.train import Trial

CPU = torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# CIFAR: tiny directories in the real python format, parsed by torchvision's own code
# ---------------------------------------------------------------------------------------------

def _md5(path):
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def _write(path, obj):
    # The real files are Python 2 pickles (protocol 2) whose str keys load as str with
    # encoding="latin1", as torchvision does; str keys written here load the same way.
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _fake_cifar(root, monkeypatch, cls, train_files, test_files, meta_file, meta_key,
                label_key, n_classes, rng):
    """Write CIFAR-format files and point `cls`'s checksums at them (torchvision checks md5s)."""
    folder = os.path.join(root, cls.base_folder)
    os.makedirs(folder)
    splits = {}
    for split, files in (("train", train_files), ("test", test_files)):
        data, labels = [], []
        for name in files:
            d = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
            lab = [int(v) for v in rng.integers(0, n_classes, size=3)]
            _write(os.path.join(folder, name), {"data": d, label_key: lab, "batch_label": name})
            data.append(d)
            labels += lab
        splits[split] = (np.concatenate(data), labels)
    _write(os.path.join(folder, meta_file), {meta_key: [f"c{i}" for i in range(n_classes)]})
    md5 = {name: _md5(os.path.join(folder, name)) for name in (*train_files, *test_files, meta_file)}
    monkeypatch.setattr(cls, "train_list", [[n, md5[n]] for n in train_files])
    monkeypatch.setattr(cls, "test_list", [[n, md5[n]] for n in test_files])
    monkeypatch.setattr(cls, "meta", {"filename": meta_file, "key": meta_key, "md5": md5[meta_file]})
    return splits


def _check_layout(ds, splits):
    for x, y, (data, labels) in ((ds.train_x, ds.train_y, splits["train"]),
                                 (ds.test_x, ds.test_y, splits["test"])):
        assert x.dtype == torch.uint8 and x.shape == (len(labels), 3, 32, 32)
        assert y.dtype == torch.int64 and y.tolist() == labels
        # Row-major planes: byte c*1024 + h*32 + w is channel c, row h, column w.
        assert x[1, 2, 5, 7].item() == data[1, 2 * 1024 + 5 * 32 + 7]
        assert x[0, 0, 31, 0].item() == data[0, 31 * 32]
        assert torch.equal(x, torch.from_numpy(data).view(-1, 3, 32, 32))


def test_cifar10_reads_the_real_format(tmp_path, monkeypatch):
    splits = _fake_cifar(str(tmp_path), monkeypatch, CIFAR10,
                         [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                         "batches.meta", "label_names", "labels", 10, np.random.default_rng(0))
    ds = load_dataset("cifar10", data_dir=str(tmp_path), download=False, n_train=0, n_test=0,
                      data_seed=0, device=CPU)
    _check_layout(ds, splits)
    assert ds.num_classes == 10 and ds.augment and ds.mean[0] == pytest.approx(0.4914)
    sub = load_dataset("cifar10", data_dir=str(tmp_path), download=False, n_train=4, n_test=2,
                       data_seed=3, device=CPU)
    assert len(sub.train_x) == 4 and len(sub.test_y) == 2
    # A subset is made of real rows, chosen the same way every time.
    rows = {bytes(r) for r in splits["train"][0]}
    assert all(bytes(r.flatten().numpy()) in rows for r in sub.train_x)
    again = load_dataset("cifar10", data_dir=str(tmp_path), download=False, n_train=4, n_test=2,
                         data_seed=3, device=CPU)
    assert torch.equal(sub.train_x, again.train_x)
    with pytest.raises(ValueError, match="n_train: 99"):
        load_dataset("cifar10", data_dir=str(tmp_path), download=False, n_train=99, n_test=0,
                     data_seed=0, device=CPU)


def test_cifar100_reads_the_real_format(tmp_path, monkeypatch):
    splits = _fake_cifar(str(tmp_path), monkeypatch, CIFAR100, ["train"], ["test"], "meta",
                         "fine_label_names", "fine_labels", 100, np.random.default_rng(1))
    ds = load_dataset("cifar100", data_dir=str(tmp_path), download=False, n_train=0, n_test=0,
                      data_seed=0, device=CPU)
    _check_layout(ds, splits)
    assert ds.num_classes == 100 and ds.augment


def test_missing_cifar_names_the_directory(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", data_dir=str(missing), download=False, n_train=0, n_test=0,
                     data_seed=0, device=CPU)
    msg = str(err.value)
    assert str(missing.resolve()) in msg and "download=true" in msg and "\n" not in msg
    assert not missing.exists()


def test_failed_download_is_a_data_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no internet")
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match="no internet"):
        load_dataset("cifar100", data_dir=str(tmp_path), download=True, n_train=0, n_test=0,
                     data_seed=0, device=CPU)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="'mnist' is not allowed"):
        load_dataset("mnist", data_dir=".", download=False, n_train=0, n_test=0, data_seed=0,
                     device=CPU)


# ---------------------------------------------------------------------------------------------
# planted
# ---------------------------------------------------------------------------------------------

def _planted(**kw):
    return load_dataset("planted", data_dir="unused", download=False, data_seed=kw.pop("seed", 0),
                        device=CPU, **{"n_train": 1000, "n_test": 500, **kw})


def test_planted_shapes_and_determinism():
    ds = _planted()
    assert ds.train_x.shape == (1000, 3, 32, 32) and ds.test_x.shape == (500, 3, 32, 32)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert ds.num_classes == 10 and not ds.augment
    assert torch.bincount(ds.train_y).tolist() == [100] * 10
    assert len(ds.mean) == len(ds.std) == 3 and all(0 < s < 1 for s in ds.std)
    same, other = _planted(), _planted(seed=1)
    assert torch.equal(ds.train_x, same.train_x) and torch.equal(ds.test_y, same.test_y)
    assert not torch.equal(ds.train_x, other.train_x)
    assert not torch.equal(ds.train_x[:500], ds.test_x)  # train and test: different noise streams


def test_planted_default_sizes():
    ds = load_dataset("planted", data_dir="unused", download=False, n_train=0, n_test=0,
                      data_seed=0, device=CPU)
    assert (len(ds.train_y), len(ds.test_y)) == (10000, 2000)


def test_fragile_feature_is_smaller_than_eps_8():
    x, y = make_planted(1000, seed=0)
    x0, y0 = make_planted(1000, seed=0, fragile_255=0)
    assert torch.equal(y, y0)
    diff = x.int() - x0.int()
    assert diff.abs().max().item() == 4 < 8
    assert (diff.abs() == 4).float().mean() > 0.95  # everywhere but the few clipped pixels


def _nearest_class_mean(features, x_train, y_train, x_test, y_test):
    f_train, f_test = features(x_train.float()), features(x_test.float())
    means = torch.stack([f_train[y_train == c].mean(0) for c in range(10)])
    return (torch.cdist(f_test, means).argmin(1) == y_test).float().mean().item()


def _low_pass(x):  # 8x8 block averages: keeps the smooth robust feature
    return F.avg_pool2d(x, 4).flatten(1)


def _high_pass(x):  # minus 2x2 block averages: keeps the zero-mean 2x2 fragile tiles
    return (x - F.interpolate(F.avg_pool2d(x, 2), scale_factor=2)).flatten(1)


def test_fragile_feature_alone_is_predictive_robust_feature_alone_is_not_perfect():
    # Fragile pattern + background noise only: a linear read-out of 2x2 high frequencies is exact.
    x, y = make_planted(2000, seed=0, robust_255=0)
    xt, yt = make_planted(1000, seed=0, stream=1, robust_255=0)
    assert _nearest_class_mean(_high_pass, x, y, xt, yt) >= 0.99
    # Robust feature + background only: well above chance (10%), but not perfect.
    x, y = make_planted(2000, seed=0, fragile_255=0)
    xt, yt = make_planted(1000, seed=0, stream=1, fragile_255=0)
    assert 0.7 < _nearest_class_mean(_low_pass, x, y, xt, yt) < 0.95  # designed: 1 - robust_flip


def test_planted_separates_standard_from_adversarial_training(tiny_config):
    """The designed property, through bnsweep's own `Trial` (the path every sweep trains on): clean
    training relies on the fragile pattern (accurate, not robust at 8/255); PGD training at 8/255
    falls back on the robust feature (clearly robust). About 15 s of CPU (2 seeds measured: clean
    training 0.995-1.0 clean, 0.0 robust; PGD training 0.72-0.84 clean, 0.53-0.66 robust)."""
    keys = dict(n_train=1000, n_test=200, eval_n=200, width=0.5, epochs=2, batch_size=32, eval_eps_255=[8],
                eval_steps=5, train_steps=3, train_step_255=3)
    clean = Trial(tiny_config(train_attack="none", **keys)).run(lambda metrics, checkpoint: None)
    assert clean["clean_acc"] > 0.9 and clean["robust_acc_eps8"] < 0.2
    adv = Trial(tiny_config(train_attack="pgd", **keys)).run(lambda metrics, checkpoint: None)
    assert adv["robust_acc_eps8"] > 0.4 and adv["clean_acc"] > adv["robust_acc_eps8"]


# ---------------------------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------------------------

def test_digits():
    ds = load_dataset("digits", data_dir="unused", download=False, n_train=0, n_test=0,
                      data_seed=0, device=CPU)
    assert ds.train_x.shape == (1438, 3, 32, 32) and ds.test_x.shape == (359, 3, 32, 32)
    assert ds.train_x.dtype == torch.uint8 and ds.num_classes == 10 and not ds.augment
    assert set(ds.train_y.tolist()) == set(range(10)) == set(ds.test_y.tolist())
    assert ds.train_x.max() == 255 and ds.train_x.min() == 0
    assert torch.equal(ds.train_x[:, 0], ds.train_x[:, 2])  # grey, replicated to 3 channels
    again = load_dataset("digits", data_dir="unused", download=False, n_train=0, n_test=0,
                         data_seed=0, device=CPU)
    other = load_dataset("digits", data_dir="unused", download=False, n_train=100, n_test=50,
                         data_seed=1, device=CPU)
    assert torch.equal(ds.test_x, again.test_x) and not torch.equal(ds.test_x[:50], other.test_x)
    assert len(other.train_y) == 100 and len(other.test_y) == 50


# ---------------------------------------------------------------------------------------------
# batches
# ---------------------------------------------------------------------------------------------

def _indexed(n):
    """Images whose every pixel holds the example's index, so batches can be traced back."""
    idx = torch.arange(n)
    return (idx % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 32, 32).contiguous(), idx


def test_batches_cover_every_example_once():
    x, y = _indexed(300)
    gen = torch.Generator().manual_seed(0)
    out = list(batches(x, y, 128, shuffle=True, augment=False, generator=gen))
    assert [len(b) for _, b in out] == [128, 128, 44]
    seen = torch.cat([b for _, b in out])
    assert sorted(seen.tolist()) == list(range(300)) and seen.tolist() != list(range(300))
    for xb, yb in out:
        assert xb.dtype == torch.float32 and xb.device == x.device
        assert 0 <= xb.min() and xb.max() <= 1
        assert torch.equal((xb[:, 0, 0, 0] * 255).round().long(), yb % 256)
    again = list(batches(x, y, 128, shuffle=True, augment=False,
                         generator=torch.Generator().manual_seed(0)))
    assert torch.equal(torch.cat([b for _, b in again]), seen)
    ordered = torch.cat([b for _, b in batches(x, y, 100, shuffle=False, augment=False)])
    assert ordered.tolist() == list(range(300))


def test_augmentation_flips_and_crops_on_device():
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(16)
    gen = torch.Generator().manual_seed(0)
    (xb, yb), = batches(x, y, 16, shuffle=False, augment=True, generator=gen)
    assert xb.shape == (16, 3, 32, 32) and xb.device == x.device and torch.equal(yb, y)
    xb = (xb * 255).round().to(torch.uint8)
    assert not torch.equal(xb, x)
    for i in range(16):  # each output is one flip x crop of the zero-padded original
        candidates = [F.pad(img, (4, 4, 4, 4))[:, dy:dy + 32, dx:dx + 32]
                      for img in (x[i], x[i].flip(2)) for dy in range(9) for dx in range(9)]
        assert any(torch.equal(xb[i], c) for c in candidates)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batches_on_cuda():
    x, y = _indexed(300)
    x, y = x.cuda(), y.cuda()
    for gen in (torch.Generator().manual_seed(0), torch.Generator("cuda").manual_seed(0)):
        out = list(batches(x, y, 128, shuffle=True, augment=True, generator=gen))
        assert all(xb.is_cuda and yb.is_cuda for xb, yb in out)
        assert sorted(torch.cat([b for _, b in out]).tolist()) == list(range(300))
