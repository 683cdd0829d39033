"""Corrupt data files: each format's reader (npz, IDX, CIFAR pickles, SVHN .mat, image folders) answers a
damaged, truncated or random file with one line `metassl: error: ...` naming the fault, exit status 2, no
run directory, and never runs pickled code. Each format's unspoiled data trains
(test_valid_files_of_each_format_train), so every rejection comes from the one spoiled file.
"""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metassl.cli import main
from tests.bad_input import BASE, G, N_TRAIN, SETTINGS, fresh, train_rejects


pytestmark = pytest.mark.usefixtures("isolated")   # conftest.py: no real data, cache, env or network


def idx_bytes(arr: np.ndarray) -> bytes:
    header = (0x800 | arr.ndim).to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def write_mnist(d: Path, spoil: dict[str, bytes] | None = None, n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (n, 28, 28)), np.arange(n) % 10, rng.integers(0, 256, (10, 28, 28)), np.arange(10)]
    d.mkdir(parents=True, exist_ok=True)
    for name, arr in zip(IDX, arrays):
        (d / (name + ".gz")).write_bytes(gzip.compress(idx_bytes(arr)))
    for name, raw in (spoil or {}).items():
        for old in d.glob(name + "*"):
            old.unlink()
        (d / name).write_bytes(raw)
    return d


def write_cifar10(d: Path, spoil: dict[str, object] | None = None) -> Path:
    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    files = {f"data_batch_{i}": {b"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8),
                                 b"labels": [(8 * i + j) % 10 for j in range(8)]} for i in range(1, 6)}
    files["test_batch"] = {b"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8), b"labels": list(range(10))}
    files.update(spoil or {})
    for name, obj in files.items():
        (d / name).write_bytes(obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=2))
    return d


def write_svhn(d: Path, train: dict | bytes | None = None) -> Path:
    from scipy.io import savemat
    d.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(0).integers(0, 256, (32, 32, 3, 20), dtype=np.uint8)
    y = (np.arange(20) % 10 + 1).reshape(-1, 1)
    good = {"X": x, "y": y}
    savemat(d / "test_32x32.mat", good)
    if isinstance(train, bytes):
        (d / "train_32x32.mat").write_bytes(train)
    else:
        savemat(d / "train_32x32.mat", train if train is not None else good)
    return d


def write_folder(root: Path, spoil: str) -> Path:
    from PIL import Image
    for split, n in (("train", 8), ("val", 2)):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (40 * i, 100, 200)).save(root / split / c / f"{i}.png")
    if spoil == "text-as-png":
        (root / "train" / "cat" / "9.png").write_text("this is not an image")
    elif spoil == "only-text-files":
        for p in (root / "train" / "dog").iterdir():
            p.unlink()
        (root / "train" / "dog" / "readme.txt").write_text("no images here")
    elif spoil == "mixed-sizes":
        Image.new("RGB", (9, 7)).save(root / "train" / "cat" / "odd.png")
    elif spoil == "truncated-png":
        raw = (root / "train" / "cat" / "0.png").read_bytes()
        (root / "train" / "cat" / "0.png").write_bytes(raw[: len(raw) // 2])
    elif spoil == "no-val":
        for p in sorted((root / "val").rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        (root / "val").rmdir()
    elif spoil == "unknown-val-class":
        (root / "val" / "cow").mkdir()
        Image.new("RGB", (8, 8)).save(root / "val" / "cow" / "0.png")
    elif spoil == "no-train":
        (root / "train").rename(root / "training")
    return root


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


NPZ_CASES = {       # name: (arrays, what the one line must name)
    "mismatched lengths": (dict(G, y=G["y"][:-1]), 'lengths must match'),
    "x float32": (dict(G, x=G["x"].astype(np.float32)), 'uint8'),
    "y float": (dict(G, y=G["y"].astype(np.float64)), 'integer'),
    "x 5-D": (dict(G, x=G["x"][..., None]), 'shape'),
    "x 2-D": (dict(G, x=G["x"].reshape(N_TRAIN, -1)), 'shape'),
    "x empty": (dict(G, x=G["x"][:0], y=G["y"][:0]), 'no images'),
    "negative label": (dict(G, y=np.where(np.arange(N_TRAIN) == 3, -1, G["y"])), 'negative label'),
    "x_test without y_test": ({k: v for k, v in G.items() if k != "y_test"}, 'together'),
    "x_test other size": (dict(G, x_test=np.zeros((8, 9, 9, 1), np.uint8)), 'x_test'),
    "y_test mismatched": (dict(G, y_test=G["y_test"][:3]), 'y_test'),
    "classes not strings": (dict(G, classes=np.arange(4)), 'classes'),
    "labels beyond classes": (dict(G, classes=np.array(["a", "b"])), '2 classes'),
    # without classes the classes are those of y_test: a stray train label is a label error, named with its count
    "stray y label": (dict(G, y=np.where(np.arange(N_TRAIN) == 3, 4, G["y"])),
                      'y labels span 0..4 but there are 4 classes (those of y_test'),
    "stray y label, counted": (dict(G, y=np.where(np.arange(N_TRAIN) % 10 == 3, 7, G["y"])),
                               'label 7 is on 4 images, the first at index 3'),
    "stray y_test label": (dict(G, y_test=np.where(np.arange(8) == 2, 4, G["y_test"])),
                           'y_test has a label no image in y carries (label 4 is on 1 image, index 2)'),
    "stray y label with classes": (dict(G, y=np.where(np.arange(N_TRAIN) == 5, 4, G["y"]),
                                        classes=np.array(["a", "b", "c", "d"])), 'label 4 is on 1 image, index 5'),
    "x_unlabeled other size": (dict(G, x_unlabeled=np.zeros((5, 4, 4, 1), np.uint8)), 'x_unlabeled'),
    "flip not bool": (dict(G, flip=np.array([1.5])), 'flip'),
    "unknown key": (dict(G, labels=G["y"]), "'labels'"),
    "missing y": ({k: v for k, v in G.items() if k != "y"}, "missing ['y']"),
}


@pytest.mark.parametrize("case", sorted(NPZ_CASES))
def test_bad_npz_names_the_fault(case, capsys, tmp_path):
    arrays, needle = NPZ_CASES[case]
    line = train_rejects([], capsys, tmp_path, _npz(tmp_path / "bad.npz", **arrays))
    assert needle in line and "divisible" not in line


def test_files_that_are_no_npz_archive_say_so_without_pickle_advice(capsys, tmp_path):
    (tmp_path / "text.npz").write_text("label,pixel0\n3,0\n")
    np.save(tmp_path / "one.npy", G["x"])
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    obj = _npz(tmp_path / "obj.npz", **dict(G, x=np.array([object()] * N_TRAIN, dtype=object)))
    for name, needle in (("text.npz", "is not a NumPy .npz archive (it starts with b'label,pixel0"),
                         ("one.npz", "single-array NumPy .npy file"), ("empty.npz", "(it is empty)")):
        line = train_rejects([], capsys, tmp_path, tmp_path / name)
        assert needle in line and "pickle" not in line, line
    assert "x is an object array" in train_rejects([], capsys, tmp_path, obj)     # pickle named only here


def test_npz_special_files(capsys, tmp_path):
    obj = tmp_path / "obj.npz"
    np.savez(obj, x=np.array([object()] * 3, dtype=object), y=np.arange(3))
    notzip = tmp_path / "notzip.npz"
    notzip.write_bytes(b"PK\x03\x04 definitely not a zip")
    two = tmp_path / "two"
    two.mkdir()
    _npz(two / "a.npz", **G)
    _npz(two / "b.npz", **G)
    for path in (obj, notzip, tmp_path / "missing.npz"):
        train_rejects([], capsys, tmp_path, path)
    train_rejects([f"data_dir={two}"], capsys, tmp_path, extra=["dataset=npz"])


def _labels_11() -> bytes:
    return gzip.compress(idx_bytes(np.full(40, 11)))


MNIST_CASES = {
    "truncated images": ({IDX[0]: idx_bytes(np.zeros((40, 28, 28)))[:-100]}, 'truncated'),
    "wrong magic": ({IDX[0]: b"\x00\x00\x09\x99" + idx_bytes(np.zeros((40, 28, 28)))[4:]}, 'magic 00000999'),
    "labels given as images": ({IDX[1]: idx_bytes(np.zeros((40, 28, 28)))}, 'not an IDX labels file'),
    "corrupt gzip": ({IDX[0] + ".gz": gzip.compress(idx_bytes(np.zeros((40, 28, 28))))[:-30]}, 'cannot read IDX'),
    "empty file": ({IDX[2]: b""}, 't10k-images'),
    "count mismatch": ({IDX[1]: idx_bytes(np.arange(39) % 10)}, '39 labels'),
    "label out of range": ({IDX[1] + ".gz": _labels_11()}, '11..11'),
}


@pytest.mark.parametrize("case", sorted(MNIST_CASES))
def test_bad_idx_names_the_fault(case, capsys, tmp_path):
    spoil, needle = MNIST_CASES[case]
    d = write_mnist(tmp_path / "mnist", spoil)
    assert needle in train_rejects(["dataset=mnist", f"data_dir={d}", "num_labels=10"], capsys, tmp_path)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


CIFAR_CASES = {       # name: (spoiled files, what the one line must name)
    "missing labels": ({"data_batch_3": {b"data": np.zeros((8, 3072), np.uint8)}}, "no key 'labels'"),
    "missing data": ({"test_batch": {b"labels": [1, 2]}}, "no key 'data'"),
    "data wrong shape": ({"data_batch_1": {b"data": np.zeros((8, 1024), np.uint8), b"labels": [0] * 8}}, '(8, 1024)'),
    "data float": ({"data_batch_1": {b"data": np.zeros((8, 3072), np.float32), b"labels": [0] * 8}}, 'float32'),
    "labels length": ({"data_batch_2": {b"data": np.zeros((8, 3072), np.uint8), b"labels": [0] * 7}}, '7 labels'),
    "labels not ints": ({"data_batch_2": {b"data": np.zeros((8, 3072), np.uint8), b"labels": ["a"] * 8}},
                        'list of integers'),
    "label out of range": ({"data_batch_2": {b"data": np.zeros((8, 3072), np.uint8), b"labels": [10] * 8}}, '0..10'),
    "a list": ({"data_batch_5": [1, 2, 3]}, 'holds a list'),
    "code in pickle": ({"data_batch_1": pickle.dumps({b"data": _Evil(), b"labels": [0]}, protocol=2)}, 'not allowed'),
    "garbage": ({"test_batch": b"\x80\x02garbage"}, 'test_batch'),
    "truncated": ({"data_batch_1": pickle.dumps({b"data": np.zeros((8, 3072), np.uint8), b"labels": [0] * 8})[:500]},
                  'data_batch_1'),
}


@pytest.mark.parametrize("case", sorted(CIFAR_CASES))
def test_bad_cifar_names_the_fault_and_runs_no_pickled_code(case, capsys, tmp_path):
    spoil, needle = CIFAR_CASES[case]
    d = write_cifar10(tmp_path / "c10", spoil)
    assert needle in train_rejects(["dataset=cifar10", f"data_dir={d}", "num_labels=10"], capsys, tmp_path)
    assert "this must never run" not in capsys.readouterr().out


def test_cifar100_without_fine_labels_is_named(capsys, tmp_path):
    d = tmp_path / "c100"
    d.mkdir()
    for name in ("train", "test"):
        (d / name).write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"coarse_labels": [0] * 4}))
    assert "fine_labels" in train_rejects(["dataset=cifar100", f"data_dir={d}", "num_labels=100"], capsys, tmp_path)


SVHN_CASES = {       # name: (spoiled files, what the one line must name)
    "no X": ({"y": np.ones((20, 1))}, "no variable 'X'"),
    "no y": ({"X": np.zeros((32, 32, 3, 20), np.uint8)}, "no variable 'y'"),
    "X float": ({"X": np.zeros((32, 32, 3, 20)), "y": np.ones((20, 1))}, 'float64'),
    "X 3-D": ({"X": np.zeros((32, 32, 20), np.uint8), "y": np.ones((20, 1))}, '(32, 32, 20)'),
    "y out of range": ({"X": np.zeros((32, 32, 3, 20), np.uint8), "y": np.full((20, 1), 11)}, '0..10'),
    "y count": ({"X": np.zeros((32, 32, 3, 20), np.uint8), "y": np.ones((19, 1))}, '(19,)'),
    "not a mat file": (b"MATLAB 5.0 MAT-file, but nothing else", 'cannot read .mat'),
}


@pytest.mark.parametrize("case", sorted(SVHN_CASES))
def test_bad_svhn_names_the_fault(case, capsys, tmp_path):
    spoil, needle = SVHN_CASES[case]
    d = write_svhn(tmp_path / "svhn", spoil)
    assert needle in train_rejects(["dataset=svhn", f"data_dir={d}", "num_labels=10"], capsys, tmp_path)


@pytest.mark.parametrize("spoil, needle", [
    ("text-as-png", "9.png"), ("only-text-files", "holds no images"), ("mixed-sizes", "differ in size"),
    ("truncated-png", "0.png"), ("no-val", "no val/"), ("unknown-val-class", "cow"), ("no-train", "no train/"),
])
def test_bad_image_folder_names_the_fault(spoil, needle, capsys, tmp_path):
    root = write_folder(tmp_path / "imgs", spoil)
    assert needle in train_rejects(["dataset=folder", f"data_dir={root}", "num_labels=4"], capsys, tmp_path)


def test_valid_files_of_each_format_train(capsys, tmp_path):
    for overrides in ([f"dataset={_npz(tmp_path / 'v.npz', **G)}"],
                      ["dataset=mnist", f"data_dir={write_mnist(tmp_path / 'mnist')}", "num_labels=10"],
                      ["dataset=cifar10", f"data_dir={write_cifar10(tmp_path / 'c10')}", "num_labels=10"],
                      ["dataset=svhn", f"data_dir={write_svhn(tmp_path / 'svhn')}", "num_labels=10"],
                      ["dataset=folder", f"data_dir={write_folder(tmp_path / 'imgs', 'none')}", "num_labels=4"]):
        out = fresh(tmp_path)
        assert main(BASE + overrides + ["--out", str(out)]) == 0, capsys.readouterr().err
        assert (out / "results.json").exists()


def test_folder_without_data_dir_asks_for_it(capsys, tmp_path):
    assert "data_dir" in train_rejects(["dataset=folder"], capsys, tmp_path)


# generated: random bytes, and valid files cut short at a random length, in each format

def _valid_file(fmt: str, tmp: Path) -> tuple[bytes, str]:
    """(the bytes of one valid file, its name) for a format."""
    if fmt == "npz":
        p = _npz(tmp / "v.npz", **G)
        return p.read_bytes(), "v.npz"
    if fmt == "idx-gz":
        return gzip.compress(idx_bytes(np.zeros((40, 28, 28)))), IDX[0] + ".gz"
    if fmt == "idx":
        return idx_bytes(np.zeros((40, 28, 28))), IDX[0]
    if fmt == "cifar":
        return pickle.dumps({b"data": np.zeros((8, 3072), np.uint8), b"labels": [0] * 8}, protocol=2), "data_batch_1"
    if fmt == "mat":
        d = write_svhn(tmp / "svhn-valid")
        return (d / "train_32x32.mat").read_bytes(), "train_32x32.mat"
    raise AssertionError(fmt)


def _place(fmt: str, raw: bytes, name: str, tmp: Path) -> list[str]:
    """Write `raw` as the one bad file of a data set of format `fmt`; the overrides that load it."""
    d = fresh(tmp)
    if fmt == "npz":
        d.mkdir()
        (d / name).write_bytes(raw)
        return [f"dataset={d / name}"]
    if fmt.startswith("idx"):
        write_mnist(d, {name: raw})
        return ["dataset=mnist", f"data_dir={d}", "num_labels=10"]
    if fmt == "cifar":
        write_cifar10(d, {name: raw})
        return ["dataset=cifar10", f"data_dir={d}", "num_labels=10"]
    write_svhn(d, raw)
    return ["dataset=svhn", f"data_dir={d}", "num_labels=10"]


FORMATS = ["npz", "idx-gz", "idx", "cifar", "mat"]


@SETTINGS
@given(fmt=st.sampled_from(FORMATS), raw=st.binary(max_size=300))
def test_random_bytes_as_data_files(fmt, raw, capsys, tmp_path):
    _, name = _valid_file(fmt, tmp_path)
    train_rejects(_place(fmt, raw, name, tmp_path), capsys, tmp_path)


@settings(SETTINGS, max_examples=25)
@given(fmt=st.sampled_from(FORMATS), frac=st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_truncated_data_files(fmt, frac, capsys, tmp_path):
    raw, name = _valid_file(fmt, tmp_path)
    cut = int(frac * len(raw))
    train_rejects(_place(fmt, raw[:cut], name, tmp_path), capsys, tmp_path)


