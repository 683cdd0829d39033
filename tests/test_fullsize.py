"""The presets' loaders on full-size CIFAR-10 and SVHN files (tests/fullsize_files.py: Fashion-MNIST re-encoded).

No training here: the runs themselves are recorded in docs/results/FINDINGS.md.
"""
from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest

from metassl.data import load_dataset
from metassl.data.sources import FASHION_CLASSES

SCRIPT = Path(__file__).resolve().parent / "fullsize_files.py"
REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("isolated"),
              pytest.mark.skipif(not REAL_FASHION_MNIST.is_dir(), reason="needs dataset-fashion-mnist")]


@pytest.fixture(scope="module")
def fullsize():
    """The script as a module and Fashion-MNIST padded to (N, 32, 32, 3)."""
    spec = importlib.util.spec_from_file_location("fullsize_files", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, mod.fashion_mnist_32(REAL_FASHION_MNIST)


def check_images(x: np.ndarray, y: np.ndarray, n: int, x_src: np.ndarray, y_src: np.ndarray) -> None:
    """n uint8 (32, 32, 3) images with int64 labels 0..9, zero border of 2, R = G = B = the source's 28x28."""
    assert x.shape == (n, 32, 32, 3) and x.dtype == np.uint8
    assert y.shape == (n,) and y.dtype == np.int64 and y.min() == 0 and y.max() == 9
    assert not x[:, :2].any() and not x[:, 30:].any() and not x[:, :, :2].any() and not x[:, :, 30:].any()
    assert (x[..., 0] == x[..., 1]).all() and (x[..., 0] == x[..., 2]).all()
    assert np.array_equal(x[:, 2:30, 2:30, 0], x_src[:, 2:30, 2:30, 0]) and np.array_equal(y, y_src)
    assert x[:, 2:30, 2:30].any()


def test_cifar10_fullsize(tmp_path, fullsize):
    mod, (xtr, ytr, xte, yte) = fullsize
    out = mod.write_cifar10(tmp_path, xtr, ytr, xte, yte, FASHION_CLASSES)
    raw = (out / "data_batch_2").read_bytes()
    assert b"_codecs" not in raw                                   # strings as Python 2's cPickle wrote them
    batch = pickle.loads(raw, encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].shape == (10_000, 3072) and isinstance(batch[b"labels"], list)
    assert np.array_equal(batch[b"data"][0, :1024].reshape(32, 32), xtr[10_000, :, :, 0])   # R plane, row-major

    d = load_dataset("cifar10", data_dir=str(tmp_path))
    assert d.extra["path"] == str(out) and d.classes == FASHION_CLASSES and d.flip
    check_images(d.x_train, d.y_train, 50_000, xtr[:50_000], ytr[:50_000])
    check_images(d.x_test, d.y_test, 10_000, xte, yte)


def test_svhn_fullsize(tmp_path, fullsize):
    from scipy.io import loadmat
    mod, (xtr, ytr, xte, yte) = fullsize
    i_train, i_test = mod.write_svhn(tmp_path, xtr, ytr, xte, yte, seed=0)
    mat = loadmat(str(tmp_path / "svhn" / "test_32x32.mat"))
    assert mat["X"].shape == (32, 32, 3, 26_032) and mat["X"].dtype == np.uint8
    assert mat["y"].shape == (26_032, 1) and mat["y"].dtype == np.uint8
    assert mat["y"].min() == 1 and mat["y"].max() == 10 and (mat["y"][:, 0] == 10).sum() == (yte[i_test] == 0).sum()

    d = load_dataset("svhn", data_dir=str(tmp_path))
    assert d.classes == [str(i) for i in range(10)] and not d.flip
    check_images(d.x_train, d.y_train, 73_257, xtr[i_train], ytr[i_train])
    check_images(d.x_test, d.y_test, 26_032, xte[i_test], yte[i_test])
    assert np.array_equal(i_train, mod.svhn_draw(60_000, 73_257, 0))   # the draw is fixed by the seed
