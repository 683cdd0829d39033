"""Data sources: read the standard files users already have into one in-memory form, `ImageData`.

Formats: Fashion-MNIST / MNIST (IDX, optionally .gz), CIFAR-10/100 (python pickle batches),
SVHN (train_32x32.mat / test_32x32.mat), an image-folder tree (ImageNet layout), and a user's .npz.

Where the named data sets are looked for, in order: data_dir, $METASSL_DATA (its <name>/ subfolder, then
itself), /usr/share/datasets/fashion-mnist (Debian `dataset-fashion-mnist`, Fashion-MNIST only), and
~/.cache/metassl/<name>. Fashion-MNIST found nowhere is downloaded (MD5-checked) into that cache
unless METASSL_OFFLINE=1. An .npz without x_test/y_test gets a stratified 10% of (x, y) as its test
set (seed 0, fixed, so every run evaluates on the same images); `extra["test_from_train"]` records it.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from metassl.data import formats
from metassl.errors import UserError


@dataclass
class ImageData:
    """A whole data set in memory: uint8 images (N, H, W, C) and int64 labels (N,)."""

    x_train: np.ndarray            # uint8 (N, H, W, C)
    y_train: np.ndarray            # int64 (N,), values in [0, num_classes)
    x_test: np.ndarray             # uint8 (M, H, W, C)
    y_test: np.ndarray             # int64 (M,)
    classes: list[str]             # class names, index = label
    flip: bool                     # is a horizontal flip label-preserving (False for digits, SVHN)
    x_unlabeled: np.ndarray | None = None   # optional unlabeled-only images (N_u, H, W, C)
    name: str = "custom"
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ----------------------------------------------------------------------------- registry and search paths

DATASETS = ("fashion-mnist", "fmnist", "mnist", "cifar10", "cifar100", "svhn", "folder", "npz")
ALIASES = {"fmnist": "fashion-mnist"}
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"   # Debian package dataset-fashion-mnist
FASHION_MNIST_URLS = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",   # official; S3 websites speak http only
)
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83d1307",
}
DOWNLOAD_TIMEOUT_S = 10
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DIGITS = [str(i) for i in range(10)]


def cache_dir(name: str) -> Path:
    """Where downloads go and the last place searched: ~/.cache/metassl/<name>."""
    return Path.home() / ".cache" / "metassl" / name


def search_dirs(name: str, data_dir: str | None) -> list[Path]:
    """Directories to look in, in order: data_dir, $METASSL_DATA (each: <name>/ subfolder first), Debian, cache."""
    bases = [Path(p).expanduser() for p in (data_dir, os.environ.get("METASSL_DATA")) if p]
    dirs = [d for b in bases for d in (b / name, b)]
    if name == "fashion-mnist":
        dirs.append(Path(DEBIAN_FASHION_MNIST))
    return dirs + [cache_dir(name)]


def locate(name: str, data_dir: str | None, present: Callable[[Path], bool],
           layouts: tuple[str, ...] = ()) -> tuple[Path | None, list[Path]]:
    """First search dir (or its standard sub-layout, e.g. cifar-10-batches-py) where `present` holds."""
    searched = search_dirs(name, data_dir)
    for d in searched:
        for candidate in [d] + [d / sub for sub in layouts]:
            if candidate.is_dir() and present(candidate):
                return candidate, searched
    return None, searched


def _where(searched: list[Path]) -> str:
    """Searched directories as one short string for error messages."""
    return ", ".join(str(d) for d in dict.fromkeys(searched))


# ----------------------------------------------------------------------------- download (Fashion-MNIST only)

def _md5(path: Path) -> str:
    """MD5 hex digest of a file (checksum of the official archives, not security)."""
    return hashlib.md5(path.read_bytes()).hexdigest()


def _fetch(fname: str, md5: str, dest: Path) -> None:
    """Download one file into dest from the first mirror that yields the right MD5; write atomically."""
    if (dest / fname).is_file() and _md5(dest / fname) == md5:
        return
    errors = []
    for base in FASHION_MNIST_URLS:
        try:
            with urllib.request.urlopen(base + fname, timeout=DOWNLOAD_TIMEOUT_S) as r:
                data = r.read()
        except (OSError, ValueError) as e:               # URLError, timeouts, http errors are OSErrors
            errors.append(f"{base + fname}: {e}")
            continue
        if hashlib.md5(data).hexdigest() != md5:
            errors.append(f"{base + fname}: MD5 mismatch")
            continue
        dest.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=fname + ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dest / fname)
        return
    raise OSError("; ".join(errors))


def download_fashion_mnist(searched: list[Path]) -> Path:
    """Fetch the 4 Fashion-MNIST files into the cache, or raise one UserError telling how to get them."""
    dest = cache_dir("fashion-mnist")
    hint = (f"install it with `apt-get install dataset-fashion-mnist`, or download the 4 .gz files from "
            f"{FASHION_MNIST_URLS[1]} into {dest} (or pass data_dir)")
    if os.environ.get("METASSL_OFFLINE", "") not in ("", "0"):
        raise UserError(f"fashion-mnist not found (searched {_where(searched)}); {hint} "
                        f"(automatic download skipped because METASSL_OFFLINE is set)")
    try:
        for fname, md5 in FASHION_MNIST_MD5.items():
            _fetch(fname, md5, dest)
    except OSError as e:
        reason = " ".join(str(e).split())
        raise UserError(f"fashion-mnist not found (searched {_where(searched)}) and download failed "
                        f"({reason}); {hint}") from None
    return dest


# ----------------------------------------------------------------------------- per-data-set loaders

def _idx_present(d: Path) -> bool:
    """All four IDX files (gz or plain) are in d."""
    return all(formats.find_idx(d, stem) for stem in IDX_FILES)


def _load_idx(name: str, data_dir: str | None, image_size: int | None) -> ImageData:
    """Fashion-MNIST / MNIST from IDX files; Fashion-MNIST is downloaded when found nowhere."""
    layouts = ("FashionMNIST/raw",) if name == "fashion-mnist" else ("MNIST/raw",)   # torchvision's layout
    d, searched = locate(name, data_dir, _idx_present, layouts)
    if d is None and name == "fashion-mnist":
        d = download_fashion_mnist(searched)
    if d is None:
        files = ", ".join(s + "[.gz]" for s in IDX_FILES)
        raise UserError(f"mnist not found (searched {_where(searched)}); put {files} into {cache_dir(name)} "
                        f"or pass data_dir")
    xtr, ytr, xte, yte = (formats.read_idx(formats.find_idx(d, s), "images" if "images" in s else "labels")
                          for s in IDX_FILES)
    for x, y, split in ((xtr, ytr, "train"), (xte, yte, "t10k")):
        if len(x) != len(y):
            raise UserError(f"{name} in {d}: {split} has {len(x)} images but {len(y)} labels; re-download the files")
    classes = FASHION_CLASSES if name == "fashion-mnist" else DIGITS
    _check_labels(name, d, {"train labels": ytr, "t10k labels": yte}, len(classes))
    return ImageData(xtr, ytr, xte, yte, list(classes), flip=name == "fashion-mnist", name=name, extra={"path": str(d)})


def _load_cifar10(name: str, data_dir: str | None, image_size: int | None) -> ImageData:
    """CIFAR-10 python batches data_batch_1..5 + test_batch (+ batches.meta for class names)."""
    d, searched = locate(name, data_dir, lambda p: (p / "data_batch_1").is_file() and (p / "test_batch").is_file(),
                         ("cifar-10-batches-py",))
    if d is None:
        raise UserError(f"cifar10 not found (searched {_where(searched)}); extract cifar-10-python.tar.gz from "
                        f"https://www.cs.toronto.edu/~kriz/cifar.html into one of them (folder cifar-10-batches-py)")
    train = [formats.read_cifar_batch(d / f"data_batch_{i}", "labels") for i in range(1, 6)]
    xte, yte = formats.read_cifar_batch(d / "test_batch", "labels")
    xtr, ytr = np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train])
    classes = formats.read_label_names(d / "batches.meta", "label_names") or [f"class_{i}" for i in range(10)]
    _check_labels(name, d, {"train labels": ytr, "test labels": yte}, len(classes))
    return ImageData(xtr, ytr, xte, yte, classes, flip=True, name=name, extra={"path": str(d)})


def _load_cifar100(name: str, data_dir: str | None, image_size: int | None) -> ImageData:
    """CIFAR-100 python files train + test with fine labels (+ meta for class names)."""
    d, searched = locate(name, data_dir, lambda p: (p / "train").is_file() and (p / "test").is_file(),
                         ("cifar-100-python",))
    if d is None:
        raise UserError(f"cifar100 not found (searched {_where(searched)}); extract cifar-100-python.tar.gz from "
                        f"https://www.cs.toronto.edu/~kriz/cifar.html into one of them (folder cifar-100-python)")
    xtr, ytr = formats.read_cifar_batch(d / "train", "fine_labels")
    xte, yte = formats.read_cifar_batch(d / "test", "fine_labels")
    classes = formats.read_label_names(d / "meta", "fine_label_names") or [f"class_{i}" for i in range(100)]
    _check_labels(name, d, {"train labels": ytr, "test labels": yte}, len(classes))
    return ImageData(xtr, ytr, xte, yte, classes, flip=True, name=name, extra={"path": str(d)})


def _load_svhn(name: str, data_dir: str | None, image_size: int | None) -> ImageData:
    """SVHN format 2: train_32x32.mat + test_32x32.mat (the `extra` split is not used)."""
    d, searched = locate(name, data_dir, lambda p: (p / "train_32x32.mat").is_file()
                         and (p / "test_32x32.mat").is_file())
    if d is None:
        raise UserError(f"svhn not found (searched {_where(searched)}); put train_32x32.mat and test_32x32.mat "
                        f"from http://ufldl.stanford.edu/housenumbers/ into one of them")
    xtr, ytr = formats.read_svhn_mat(d / "train_32x32.mat")
    xte, yte = formats.read_svhn_mat(d / "test_32x32.mat")
    return ImageData(xtr, ytr, xte, yte, list(DIGITS), flip=False, name=name, extra={"path": str(d)})


def _load_folder(name: str, data_dir: str | None, image_size: int | None) -> ImageData:
    """ImageNet-style tree: train/<class>/*, val/<class>/* (or test/), optional flat unlabeled/*."""
    if not data_dir:
        raise UserError("dataset 'folder' needs data_dir: a folder with train/<class>/*.png and val/<class>/*.png")
    root = Path(data_dir).expanduser()
    train, val, classes = formats.folder_layout(root)
    xtr, ytr = formats.read_class_tree(train, classes, image_size)
    xte, yte = formats.read_class_tree(val, classes, image_size, require=False)
    unl = root / "unlabeled"
    unl_files = formats.list_images(unl) if unl.is_dir() else []
    xu = formats.read_images(unl_files, image_size) if unl_files else None
    sets = {"train": xtr, "val": xte, **({"unlabeled": xu} if xu is not None else {})}
    _check_shapes(root, {k: v for k, v in sets.items() if len(v)}, "pass image_size=... to resize them all")
    return ImageData(xtr, ytr, xte, yte, classes, flip=True, x_unlabeled=xu, name=name, extra={"path": str(root)})


def _npz_path(name: str, data_dir: str | None) -> Path:
    """The .npz file: `name` itself when it ends in .npz, else data_dir (a file, or a folder with one .npz)."""
    if name.lower().endswith(".npz"):
        path = Path(name).expanduser()
    elif not data_dir:
        raise UserError("dataset 'npz' needs data_dir: the path of a .npz file (or a folder holding exactly one)")
    else:
        path = Path(data_dir).expanduser()
        if path.is_dir():
            found = sorted(path.glob("*.npz"))
            if len(found) != 1:
                raise UserError(f"{path} holds {len(found)} .npz files; expected exactly one, or pass the file path")
            path = found[0]
    if not path.is_file():
        raise UserError(f"npz file {path} does not exist; pass the path of a .npz file made with np.savez")
    return path


NPZ_KEYS = ("x", "y", "x_test", "y_test", "x_unlabeled", "classes", "flip")


def _load_npz(name: str, data_dir: str | None, image_size: int | None) -> ImageData:
    """A user's .npz: x, y [, x_test, y_test, x_unlabeled, classes, flip]; no test set -> stratified 10% held out."""
    path = _npz_path(name, data_dir)
    a = formats.read_npz(path)
    bad = sorted(set(a) - set(NPZ_KEYS))
    missing = [k for k in ("x", "y") if k not in a]
    if bad or missing:
        raise UserError(f"npz file {path}: {'missing ' + str(missing) if missing else 'unknown keys ' + str(bad)}; "
                        f"allowed keys: {', '.join(NPZ_KEYS)} (x and y required)")
    x = formats.as_nhwc(a["x"], "x", path)
    y = formats.as_labels(a["y"], "y", len(x), path)
    if len(x) == 0:
        raise UserError(f"npz file {path}: x holds no images")
    extra: dict = {"path": str(path)}
    if ("x_test" in a) != ("y_test" in a):
        raise UserError(f"npz file {path}: x_test and y_test must be given together (or neither: 10% of x is held out)")
    if "x_test" in a:
        xte = formats.as_nhwc(a["x_test"], "x_test", path)
        yte = formats.as_labels(a["y_test"], "y_test", len(xte), path)
    if "classes" in a:
        c = a["classes"]
        if c.ndim != 1 or c.dtype.kind not in "US":
            raise UserError(f"npz file {path}: classes must be a 1-D array of str, got {c.dtype} {c.shape}")
        classes, source = [str(s) for s in c], " (named in classes)"
    elif "y_test" in a and len(yte):          # the classes are those of the test set: a stray y is a label error
        classes = [str(i) for i in range(int(yte.max()) + 1)]
        source = " (those of y_test; a classes array of names would declare more)"
    else:
        classes, source = [str(i) for i in range(int(y.max()) + 1)], ""
    _check_labels("npz", path, {"y": y, **({"y_test": yte} if "y_test" in a else {})}, len(classes), source)
    unseen = np.flatnonzero(~np.isin(yte, y)) if "classes" not in a and "y_test" in a else []
    if len(unseen):
        raise UserError(f"npz in {path}: y_test has a label no image in y carries ({_label_count(yte, unseen)}); "
                        f"without a classes array the classes are 0..max(y_test) and each needs training images: "
                        f"fix that label or add a classes array")
    if "x_test" not in a:                                 # documented: stratified 10% of (x, y), seed 0
        keep, test = formats.stratified_holdout(y, 0.1, seed=0)
        x, y, xte, yte = x[keep], y[keep], x[test], y[test]
        extra["test_from_train"] = True
    xu = formats.as_nhwc(a["x_unlabeled"], "x_unlabeled", path) if "x_unlabeled" in a else None
    _check_shapes(path, {"x": x, "x_test": xte, **({"x_unlabeled": xu} if xu is not None else {})}, "")
    flip = False
    if "flip" in a:
        f = a["flip"]
        if f.size != 1 or f.dtype.kind not in "bi":
            raise UserError(f"npz file {path}: flip must be a single bool, got {f.dtype} {f.shape}")
        flip = bool(f.item())
    return ImageData(x, y, xte, yte, classes, flip=flip, x_unlabeled=xu, name="npz", extra=extra)


def _check_labels(name: str, where: Path, ys: dict[str, np.ndarray], num_classes: int, source: str = "") -> None:
    """Every label lies in 0..num_classes-1; else one line naming the array, the first bad label, how many
    images carry it and the first one's index (`source` says where the number of classes comes from)."""
    for key, y in ys.items():
        bad = np.flatnonzero((y < 0) | (y >= num_classes))
        if len(bad):
            raise UserError(f"{name} in {where}: {key} labels span {y.min()}..{y.max()} but there are {num_classes} "
                            f"classes{source}; labels must be 0..{num_classes - 1}, and {_label_count(y, bad)}")


def _label_count(y: np.ndarray, bad: np.ndarray) -> str:
    """'label 10 is on 3 images, the first at index 7': the label at y's first `bad` index, how often and where."""
    v = y[bad[0]]
    n = int(np.count_nonzero(y == v))
    return f"label {v} is on " + (f"{n} images, the first at index {bad[0]}" if n > 1 else f"1 image, index {bad[0]}")


def _check_shapes(where: Path, sets: dict[str, np.ndarray], hint: str) -> None:
    """All image arrays share one (H, W, C)."""
    shapes = {k: v.shape[1:] for k, v in sets.items()}
    if len(set(shapes.values())) > 1:
        raise UserError(f"images in {where} differ in shape {shapes}; all must be equal"
                        + (f"; {hint}" if hint else ""))


LOADERS: dict[str, Callable[[str, str | None, int | None], ImageData]] = {
    "fashion-mnist": _load_idx, "mnist": _load_idx, "cifar10": _load_cifar10, "cifar100": _load_cifar100,
    "svhn": _load_svhn, "folder": _load_folder, "npz": _load_npz,
}


def load_dataset(name: str, data_dir: str | None = None, image_size: int | None = None) -> ImageData:
    """Load a data set by name (see DATASETS) or .npz path; image_size resizes every image to a square."""
    if image_size is not None and (not isinstance(image_size, (int, np.integer)) or image_size <= 0):
        raise UserError(f"image_size must be a positive integer, got {image_size!r}")
    key = str(name).strip()
    canonical = "npz" if key.lower().endswith(".npz") else ALIASES.get(key.lower(), key.lower())
    if canonical not in LOADERS:
        raise UserError(f"unknown data set {name!r}; allowed: {', '.join(DATASETS)}, or a path ending in .npz")
    data = LOADERS[canonical](key if canonical == "npz" else canonical, data_dir, image_size)
    if image_size is not None and canonical != "folder":
        data.x_train = formats.resize_images(data.x_train, image_size)
        data.x_test = formats.resize_images(data.x_test, image_size)
        if data.x_unlabeled is not None:
            data.x_unlabeled = formats.resize_images(data.x_unlabeled, image_size)
    return data
