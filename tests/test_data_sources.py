"""load_dataset on tiny files written in the real on-disk formats, plus every bad-input path."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from metassl.data import DATASETS, ImageData, load_dataset
from metassl.data import sources
from metassl.errors import UserError

REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


pytestmark = pytest.mark.usefixtures("isolated")   # conftest.py: no real data, cache, env or network


def user_error(fn, *needles: str) -> str:
    """Run fn, expect a one-line UserError containing every needle; return the message."""
    with pytest.raises(UserError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


# ----------------------------------------------------------------------------- writers in the real formats

def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX encoding: magic 0x0803 (3-D) / 0x0801 (1-D), big-endian dims, uint8 payload."""
    magic = 0x800 | arr.ndim
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx_dir(d: Path, gz: bool, n_train: int = 20, n_test: int = 10, seed: int = 0) -> dict:
    """Four MNIST-style IDX files (gzipped or plain) with random content; returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {IDX_NAMES[0]: rng.integers(0, 256, (n_train, 28, 28)), IDX_NAMES[1]: np.arange(n_train) % 10,
              IDX_NAMES[2]: rng.integers(0, 256, (n_test, 28, 28)), IDX_NAMES[3]: np.arange(n_test) % 10}
    d.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        raw = idx_bytes(arr)
        (d / (name + ".gz" if gz else name)).write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


def cifar_rows(n: int, seed: int) -> np.ndarray:
    """(n, 3072) uint8 rows, CHW order as in the CIFAR batches."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def dump(path: Path, obj) -> None:
    """Pickle with protocol 2, like the original CIFAR files."""
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar10(d: Path, per_batch: int = 4) -> None:
    """data_batch_1..5, test_batch, batches.meta with bytes keys."""
    d.mkdir(parents=True)
    for i in range(1, 6):
        dump(d / f"data_batch_{i}", {b"data": cifar_rows(per_batch, i), b"labels": [j % 10 for j in range(per_batch)],
                                     b"batch_label": b"training batch"})
    dump(d / "test_batch", {b"data": cifar_rows(3, 9), b"labels": [7, 8, 9]})
    dump(d / "batches.meta", {b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer",
                                               b"dog", b"frog", b"horse", b"ship", b"truck"]})


def write_cifar100(d: Path) -> None:
    """train, test, meta with fine and coarse labels."""
    d.mkdir(parents=True)
    dump(d / "train", {b"data": cifar_rows(6, 1), b"fine_labels": [0, 1, 2, 97, 98, 99], b"coarse_labels": [0] * 6})
    dump(d / "test", {b"data": cifar_rows(2, 2), b"fine_labels": [5, 99], b"coarse_labels": [0, 0]})
    dump(d / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)], b"coarse_label_names": []})


def write_svhn(d: Path, n: int = 5) -> np.ndarray:
    """train/test_32x32.mat with X (32, 32, 3, N) and y (N, 1) including label 10 (= digit 0)."""
    from scipy.io import savemat
    d.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(0).integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = np.array([[10], [1], [2], [10], [9]], dtype=np.uint8)[:n]
    savemat(d / "train_32x32.mat", {"X": x, "y": y})
    savemat(d / "test_32x32.mat", {"X": x[..., :2], "y": y[:2]})
    return x


def write_image(path: Path, size: tuple[int, int] = (8, 6), color: int = 0) -> None:
    """A small solid RGB image via Pillow (format from the extension)."""
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (color, 255 - color, 40)).save(path)


def write_folder(root: Path, size: tuple[int, int] = (8, 6)) -> None:
    """train/{cat,dog}, val/{cat,dog}, unlabeled/ with PNG and JPEG files and a stray .txt."""
    for split, n in (("train", 3), ("val", 1)):
        for c, cls in enumerate(("cat", "dog")):
            for i in range(n):
                write_image(root / split / cls / f"{i}.{'png' if c == 0 else 'jpg'}", size, 200 * c)
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    write_image(root / "unlabeled" / "u0.png", size)
    write_image(root / "unlabeled" / "u1.jpeg", size)


# ----------------------------------------------------------------------------- good files

@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["fashion-mnist", "fmnist", "mnist"])
def test_idx(tmp_path, gz, name):
    arrays = write_idx_dir(tmp_path / "d", gz)
    data = load_dataset(name, str(tmp_path / "d"))
    assert isinstance(data, ImageData)
    assert data.x_train.shape == (20, 28, 28, 1) and data.x_test.shape == (10, 28, 28, 1)
    assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int64
    np.testing.assert_array_equal(data.x_train[..., 0], arrays[IDX_NAMES[0]])
    np.testing.assert_array_equal(data.y_test, arrays[IDX_NAMES[3]])
    assert data.num_classes == 10
    canonical = "mnist" if name == "mnist" else "fashion-mnist"
    assert data.name == canonical and data.flip == (canonical == "fashion-mnist")
    assert data.classes[0] == ("0" if name == "mnist" else "T-shirt/top")


def test_search_order_env_subdir_and_cache(tmp_path, monkeypatch):
    """$METASSL_DATA/<name> wins over $METASSL_DATA itself; the cache is the last resort."""
    env = tmp_path / "env"
    write_idx_dir(env, gz=True, n_train=20, seed=1)               # MNIST files at top level
    write_idx_dir(env / "fashion-mnist", gz=False, n_train=30)     # same file names, in the named subfolder
    monkeypatch.setenv("METASSL_DATA", str(env))
    assert len(load_dataset("fashion-mnist").x_train) == 30
    assert len(load_dataset("mnist").x_train) == 20
    monkeypatch.delenv("METASSL_DATA")
    write_idx_dir(Path(os.environ["HOME"]) / ".cache/metassl/mnist", gz=True, n_train=12)
    assert len(load_dataset("mnist").x_train) == 12


def test_debian_path(tmp_path, monkeypatch):
    write_idx_dir(tmp_path / "deb", gz=True)
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", str(tmp_path / "deb"))
    assert load_dataset("fashion-mnist").extra["path"] == str(tmp_path / "deb")


def test_image_size_resizes(tmp_path):
    write_idx_dir(tmp_path / "d", gz=True)
    data = load_dataset("mnist", str(tmp_path / "d"), image_size=32)
    assert data.x_train.shape == (20, 32, 32, 1) and data.x_test.shape == (10, 32, 32, 1)


def test_cifar10(tmp_path):
    write_cifar10(tmp_path / "c" / "cifar-10-batches-py")
    data = load_dataset("cifar10", str(tmp_path / "c"))               # finds the standard subfolder
    assert data.x_train.shape == (20, 32, 32, 3) and data.x_test.shape == (3, 32, 32, 3)
    rows = cifar_rows(4, 1)
    np.testing.assert_array_equal(data.x_train[0, 5, 7], rows[0, [5 * 32 + 7, 1024 + 5 * 32 + 7, 2048 + 5 * 32 + 7]])
    assert data.y_train.dtype == np.int64 and list(data.y_test) == [7, 8, 9]
    assert data.classes[:2] == ["airplane", "automobile"] and data.flip and data.name == "cifar10"


def test_cifar10_without_meta_gets_generic_names(tmp_path):
    write_cifar10(tmp_path / "c")
    (tmp_path / "c" / "batches.meta").unlink()
    assert load_dataset("cifar10", str(tmp_path / "c")).classes == [f"class_{i}" for i in range(10)]


def test_cifar100(tmp_path):
    write_cifar100(tmp_path / "cifar-100-python")
    data = load_dataset("cifar100", str(tmp_path))
    assert data.x_train.shape == (6, 32, 32, 3) and list(data.y_train) == [0, 1, 2, 97, 98, 99]
    assert data.num_classes == 100 and data.classes[99] == "c99" and data.flip and data.name == "cifar100"


def test_svhn(tmp_path):
    x = write_svhn(tmp_path / "s")
    data = load_dataset("svhn", str(tmp_path / "s"))
    assert data.x_train.shape == (5, 32, 32, 3) and data.x_train.dtype == np.uint8
    np.testing.assert_array_equal(data.x_train[3], x[..., 3])
    assert list(data.y_train) == [0, 1, 2, 0, 9] and data.y_train.dtype == np.int64
    assert data.classes == [str(i) for i in range(10)] and not data.flip and data.name == "svhn"


def test_folder(tmp_path):
    write_folder(tmp_path / "f")
    data = load_dataset("folder", str(tmp_path / "f"))
    assert data.classes == ["cat", "dog"] and data.flip and data.name == "folder"
    assert data.x_train.shape == (6, 6, 8, 3) and list(data.y_train) == [0, 0, 0, 1, 1, 1]
    assert data.x_test.shape == (2, 6, 8, 3) and data.x_unlabeled.shape == (2, 6, 8, 3)
    assert data.x_train[0, 0, 0, 0] == 0 and data.x_train[3, 0, 0, 0] > 150   # JPEG is lossy, PNG exact


def test_folder_test_dir_and_image_size(tmp_path):
    write_folder(tmp_path / "f")
    (tmp_path / "f" / "val").rename(tmp_path / "f" / "test")
    write_image(tmp_path / "f" / "train" / "dog" / "big.bmp", (20, 10))
    user_error(lambda: load_dataset("folder", str(tmp_path / "f")), "image_size=")
    data = load_dataset("folder", str(tmp_path / "f"), image_size=16)
    assert data.x_train.shape == (7, 16, 16, 3) and data.x_test.shape == (2, 16, 16, 3)
    assert data.x_unlabeled.shape == (2, 16, 16, 3)


def test_npz_full(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "my.npz"
    np.savez(path, x=rng.integers(0, 256, (12, 9, 9), dtype=np.uint8), y=np.arange(12) % 3,
             x_test=np.zeros((4, 9, 9), np.uint8), y_test=np.array([0, 1, 2, 2]),
             x_unlabeled=np.zeros((5, 9, 9), np.uint8), classes=np.array(["a", "b", "c"]), flip=np.array(True))
    for data in (load_dataset(str(path)), load_dataset("npz", str(path)), load_dataset("npz", str(tmp_path))):
        assert data.x_train.shape == (12, 9, 9, 1) and data.x_test.shape == (4, 9, 9, 1)
        assert data.x_unlabeled.shape == (5, 9, 9, 1) and data.classes == ["a", "b", "c"]
        assert data.flip and data.name == "npz" and data.y_train.dtype == np.int64


def test_npz_without_test_holds_out_stratified_10_percent(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.arange(120, dtype=np.uint8).reshape(120, 1, 1, 1).repeat(4, 1), y=np.arange(120) % 4)
    a, b = load_dataset(str(path)), load_dataset(str(path))
    assert len(a.x_test) == 12 and len(a.x_train) == 108 and np.bincount(a.y_test).tolist() == [3, 3, 3, 3]
    np.testing.assert_array_equal(a.x_test, b.x_test)                   # fixed seed
    assert not set(a.x_train[:, 0, 0, 0]) & set(a.x_test[:, 0, 0, 0])
    assert a.extra["test_from_train"] and a.classes == ["0", "1", "2", "3"] and not a.flip


# ----------------------------------------------------------------------------- bad files

def test_idx_truncated(tmp_path):
    write_idx_dir(tmp_path / "d", gz=False)
    p = tmp_path / "d" / IDX_NAMES[0]
    p.write_bytes(p.read_bytes()[:-100])
    user_error(lambda: load_dataset("mnist", str(tmp_path / "d")), "truncated", str(p))


def test_idx_truncated_gzip(tmp_path):
    write_idx_dir(tmp_path / "d", gz=True)
    p = tmp_path / "d" / (IDX_NAMES[0] + ".gz")
    p.write_bytes(p.read_bytes()[:200])
    user_error(lambda: load_dataset("fashion-mnist", str(tmp_path / "d")), str(p))


def test_idx_wrong_magic(tmp_path):
    write_idx_dir(tmp_path / "d", gz=True)
    p = tmp_path / "d" / (IDX_NAMES[1] + ".gz")
    p.write_bytes(gzip.compress(idx_bytes(np.zeros((3, 2, 2)))))          # images where labels belong
    user_error(lambda: load_dataset("mnist", str(tmp_path / "d")), "magic", "00000801", str(p))


def test_idx_count_mismatch(tmp_path):
    write_idx_dir(tmp_path / "d", gz=False)
    (tmp_path / "d" / IDX_NAMES[1]).write_bytes(idx_bytes(np.zeros(5)))
    user_error(lambda: load_dataset("mnist", str(tmp_path / "d")), "20 images but 5 labels")


def test_cifar_missing_key(tmp_path):
    write_cifar10(tmp_path / "c")
    dump(tmp_path / "c" / "data_batch_3", {b"data": cifar_rows(4, 3)})
    user_error(lambda: load_dataset("cifar10", str(tmp_path / "c")), "labels", "data_batch_3")


def test_cifar100_missing_fine_labels(tmp_path):
    write_cifar100(tmp_path / "c")
    dump(tmp_path / "c" / "test", {b"data": cifar_rows(2, 2), b"coarse_labels": [0, 0]})
    user_error(lambda: load_dataset("cifar100", str(tmp_path / "c")), "fine_labels")


class Evil:
    """Unpickling this would run os.system if globals were not restricted."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cifar_pickle_cannot_run_code(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "c")
    dump(tmp_path / "c" / "test_batch", {b"data": Evil(), b"labels": []})
    monkeypatch.chdir(tmp_path)
    user_error(lambda: load_dataset("cifar10", str(tmp_path / "c")), "not allowed", "test_batch")
    assert not (tmp_path / "pwned").exists()


def test_cifar_garbage_file(tmp_path):
    write_cifar10(tmp_path / "c")
    (tmp_path / "c" / "data_batch_2").write_bytes(b"garbage")
    user_error(lambda: load_dataset("cifar10", str(tmp_path / "c")), "data_batch_2")


def test_svhn_mat_without_x(tmp_path):
    from scipy.io import savemat
    write_svhn(tmp_path / "s")
    savemat(tmp_path / "s" / "test_32x32.mat", {"y": np.ones((2, 1))})
    user_error(lambda: load_dataset("svhn", str(tmp_path / "s")), "'X'", "test_32x32.mat")


def test_svhn_not_a_mat_file(tmp_path):
    write_svhn(tmp_path / "s")
    (tmp_path / "s" / "train_32x32.mat").write_bytes(b"\x00" * 50)
    user_error(lambda: load_dataset("svhn", str(tmp_path / "s")), "train_32x32.mat")


def test_folder_corrupt_image(tmp_path):
    write_folder(tmp_path / "f")
    bad = tmp_path / "f" / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    user_error(lambda: load_dataset("folder", str(tmp_path / "f")), str(bad))


def test_folder_empty_class_and_no_classes(tmp_path):
    write_folder(tmp_path / "f")
    (tmp_path / "f" / "train" / "emu").mkdir()
    user_error(lambda: load_dataset("folder", str(tmp_path / "f")), "emu", "no images")
    (tmp_path / "g" / "train").mkdir(parents=True)
    user_error(lambda: load_dataset("folder", str(tmp_path / "g")), "no class subfolders")
    user_error(lambda: load_dataset("folder"), "data_dir")


def test_folder_empty_val_and_empty_unlabeled(tmp_path):
    write_folder(tmp_path / "f")
    for p in (tmp_path / "f" / "unlabeled").iterdir():
        p.unlink()
    assert load_dataset("folder", str(tmp_path / "f")).x_unlabeled is None
    for p in (tmp_path / "f" / "val").rglob("*.*"):
        p.unlink()
    user_error(lambda: load_dataset("folder", str(tmp_path / "f")), "val")


def test_folder_val_class_unknown_to_train(tmp_path):
    write_folder(tmp_path / "f")
    write_image(tmp_path / "f" / "val" / "cow" / "0.png")
    user_error(lambda: load_dataset("folder", str(tmp_path / "f")), "cow")


@pytest.mark.parametrize("arrays, needle", [
    (dict(x=np.zeros((5, 4, 4), np.uint8), y=np.zeros(4, np.int64)), "lengths must match"),
    (dict(x=np.zeros((5, 4, 4), np.float32), y=np.zeros(5, np.int64)), "x must be uint8, got float32"),
    (dict(x=np.zeros((5, 4, 4), np.uint8), y=np.zeros(5, np.float64)), "integer"),
    (dict(x=np.zeros((5, 4, 4), np.uint8)), "missing ['y']"),
    (dict(x=np.zeros((5, 4, 4), np.uint8), y=np.zeros(5, int), x_test=np.zeros((2, 4, 4), np.uint8)), "together"),
    (dict(x=np.zeros((5, 4, 4), np.uint8), y=np.zeros(5, int), x_test=np.zeros((2, 5, 5), np.uint8),
          y_test=np.zeros(2, int)), "differ in shape"),
    (dict(x=np.zeros((5, 4, 4), np.uint8), y=np.array([0, 1, 2, 3, 4]), classes=np.array(["a", "b"])), "labels"),
    (dict(x=np.zeros((5, 4, 4), np.uint8), y=np.zeros(5, int), X_test=np.zeros(1)), "unknown keys"),
])
def test_npz_bad(tmp_path, arrays, needle):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    user_error(lambda: load_dataset(str(path)), needle, str(path))


def test_npz_not_a_zip_and_missing(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"nope")
    user_error(lambda: load_dataset(str(tmp_path / "x.npz")), "x.npz")
    user_error(lambda: load_dataset(str(tmp_path / "absent.npz")), "does not exist")
    user_error(lambda: load_dataset("npz", str(tmp_path / "empty-dir-none")), "does not exist")


def test_unknown_name_lists_allowed():
    msg = user_error(lambda: load_dataset("imagenet-42"), "imagenet-42")
    assert all(name in msg for name in DATASETS)


def test_fashion_mnist_absent_offline(tmp_path):
    user_error(lambda: load_dataset("fashion-mnist"), "apt-get install dataset-fashion-mnist",
               "fashion-mnist.s3-website", "METASSL_OFFLINE", str(tmp_path / "no-debian"))


def test_mnist_absent(tmp_path):
    user_error(lambda: load_dataset("mnist", str(tmp_path / "nowhere")), "train-images-idx3-ubyte", "nowhere")


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn"])
def test_other_absent(tmp_path, name):
    user_error(lambda: load_dataset(name, str(tmp_path / "nowhere")), name, "nowhere")


# ----------------------------------------------------------------------------- download (network faked)

class FakeResponse(io.BytesIO):
    """What urlopen returns: a readable context manager."""


def test_download_verifies_md5_and_writes_atomically(tmp_path, monkeypatch):
    files = {n + ".gz": gzip.compress(idx_bytes(a)) for n, a in write_idx_dir(tmp_path / "src", gz=False).items()}
    monkeypatch.setattr(sources, "FASHION_MNIST_MD5", {n: hashlib.md5(b).hexdigest() for n, b in files.items()})
    monkeypatch.delenv("METASSL_OFFLINE")
    seen = []

    def urlopen(url, timeout):
        seen.append(url)
        if url.startswith(sources.FASHION_MNIST_URLS[0]):       # first mirror serves corrupt data
            return FakeResponse(b"corrupt")
        return FakeResponse(files[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(sources.urllib.request, "urlopen", urlopen)
    data = load_dataset("fashion-mnist")
    cache = Path(os.environ["HOME"]) / ".cache/metassl/fashion-mnist"
    assert data.x_train.shape == (20, 28, 28, 1) and data.extra["path"] == str(cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted(files)      # no tmp files left behind
    assert len(seen) == 8


def test_download_failure_is_one_user_error(monkeypatch):
    monkeypatch.delenv("METASSL_OFFLINE")

    def urlopen(url, timeout):
        raise OSError("network unreachable\nsecond line")

    monkeypatch.setattr(sources.urllib.request, "urlopen", urlopen)
    user_error(lambda: load_dataset("fmnist"), "apt-get install dataset-fashion-mnist", "download failed")


# ----------------------------------------------------------------------------- the real thing, if installed

@pytest.mark.skipif(not (REAL_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    data = load_dataset("fashion-mnist", str(REAL_FASHION_MNIST))
    assert data.x_train.shape == (60000, 28, 28, 1) and data.x_test.shape == (10000, 28, 28, 1)
    assert data.num_classes == 10 and np.bincount(data.y_train).tolist() == [6000] * 10
    assert data.y_train[:5].tolist() == [9, 0, 0, 3, 0]
