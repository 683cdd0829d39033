"""Per-format readers: turn files in their standard on-disk formats into uint8 NHWC arrays.

Every reader checks what it reads and raises `UserError` (one line, with the path) on a bad file,
so a truncated download or a wrong file never surfaces as a raw struct/KeyError traceback.
"""
from __future__ import annotations

import gzip
import os
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from metassl.errors import UserError

from .split import class_share

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# ----------------------------------------------------------------------------- IDX (MNIST family)

IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}


def find_idx(directory: Path, stem: str) -> Path | None:
    """The IDX file `stem` in `directory`, gzipped or plain, also the `train-images.idx3-ubyte` spelling."""
    dotted = stem[::-1].replace("-", ".", 1)[::-1]      # train-images-idx3-ubyte -> train-images.idx3-ubyte
    for base in (stem, dotted):
        for name in (base + ".gz", base):
            if (directory / name).is_file():
                return directory / name
    return None


def read_idx(path: Path, kind: str) -> np.ndarray:
    """Read an IDX file: images -> (N, H, W, 1) uint8, labels -> (N,) int64; header and length checked."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":                        # gzip magic, whatever the file name says
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"cannot read IDX file {path}: {e}; expected an MNIST-style .gz or plain IDX file") from None
    magic, ndim = IDX_MAGIC[kind], 3 if kind == "images" else 1
    if len(raw) < 4 + 4 * ndim or int.from_bytes(raw[:4], "big") != magic:
        got = raw[:4].hex() if len(raw) >= 4 else f"{len(raw)} bytes"
        raise UserError(f"{path} is not an IDX {kind} file: magic {got}, expected {magic:08x}")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    payload = raw[4 + 4 * ndim:]
    if len(payload) != int(np.prod(dims)):
        raise UserError(f"IDX file {path} is truncated or corrupt: header says {dims} = {int(np.prod(dims))} "
                        f"bytes of data, file has {len(payload)}; re-download it")
    arr = np.frombuffer(payload, dtype=np.uint8).reshape(dims)
    return arr[..., None].copy() if kind == "images" else arr.astype(np.int64)


# ----------------------------------------------------------------------------- CIFAR (pickles)

def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR pickle needs: numpy array reconstruction, under old and new module names."""
    try:
        from numpy._core import multiarray
    except ImportError:                                   # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = multiarray._reconstruct
        table[(module, "scalar")] = multiarray.scalar
    import _codecs                                        # protocol-2 pickles from Python 3 encode bytes this way
    table[("_codecs", "encode")] = _codecs.encode
    return table


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy-array globals, so loading a user's file cannot run code.

    A plain `pickle.load` on a downloaded file executes whatever callables the file names; CIFAR
    batches only need dicts, lists, bytes and numpy arrays, so every other global is refused.
    """

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        """Return an allow-listed global or refuse."""
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def read_pickle(path: Path) -> dict:
    """Load a CIFAR-style pickle (dict with bytes keys) through `SafeUnpickler`."""
    try:
        with open(path, "rb") as f:
            obj = SafeUnpickler(f, encoding="bytes").load()
    except Exception as e:                                # any failure here means a bad file
        raise UserError(f"cannot read CIFAR pickle {path}: {e}; expected the python version of the "
                        f"CIFAR files (https://www.cs.toronto.edu/~kriz/cifar.html)") from None
    if not isinstance(obj, dict):
        raise UserError(f"CIFAR pickle {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def _get(batch: dict, key: str, path: Path) -> Any:
    """batch[key] (bytes or str key), or a UserError naming the keys that are there."""
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    have = sorted(k.decode() if isinstance(k, bytes) else str(k) for k in batch)
    raise UserError(f"CIFAR pickle {path} has no key '{key}' (has {have}); expected keys data and {key}")


def read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch: (N, 3072) CHW rows -> (N, 32, 32, 3) uint8 images and int64 labels."""
    batch = read_pickle(path)
    data, labels = _get(batch, "data", path), _get(batch, label_key, path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise UserError(f"CIFAR pickle {path}: data must be a uint8 array of shape (N, 3072), got {got}")
    try:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise UserError(f"CIFAR pickle {path}: {label_key} must be a list of integers") from None
    if len(y) != len(data):
        raise UserError(f"CIFAR pickle {path}: {len(data)} images but {len(y)} {label_key}; they must match")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), y


def read_label_names(path: Path, key: str) -> list[str] | None:
    """Class names from a CIFAR meta pickle, or None when the file is absent."""
    if not path.is_file():
        return None
    names = _get(read_pickle(path), key, path)
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


# ----------------------------------------------------------------------------- SVHN (.mat)

def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """SVHN `*_32x32.mat`: X (32, 32, 3, N) -> (N, 32, 32, 3) uint8; y with 10 meaning digit 0 -> 0."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise UserError("reading SVHN .mat files needs scipy: pip install scipy") from None
    try:
        mat = loadmat(str(path))
    except Exception as e:                                # scipy raises many types for bad files
        raise UserError(f"cannot read .mat file {path}: {e}; expected SVHN format-2 "
                        f"train_32x32.mat/test_32x32.mat") from None
    for key in ("X", "y"):
        if key not in mat:
            have = sorted(k for k in mat if not k.startswith("__"))
            raise UserError(f".mat file {path} has no variable '{key}' (has {have}); "
                            f"expected X (32, 32, 3, N) and y (N, 1)")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[2] != 3 or x.dtype != np.uint8:
        raise UserError(f".mat file {path}: X must be uint8 of shape (H, W, 3, N), got {x.dtype} {x.shape}")
    if len(y) != x.shape[3] or not np.issubdtype(y.dtype, np.number) or np.any((y < 0) | (y > 10)):
        raise UserError(f".mat file {path}: y must hold {x.shape[3]} labels in 0..10, got {y.dtype} {y.shape}")
    y = y.astype(np.int64)
    y[y == 10] = 0
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), y


# ----------------------------------------------------------------------------- image folders

def pil_image():
    """Import Pillow lazily: only folder data sets and resizing need it."""
    try:
        from PIL import Image
    except ImportError:
        raise UserError("image folders and image_size need Pillow: pip install pillow") from None
    return Image


def bilinear_filter(Image) -> int:
    """The bilinear filter constant across Pillow versions (Image.Resampling since 9.1)."""
    return getattr(Image, "Resampling", Image).BILINEAR


def class_dirs(directory: Path) -> list[str]:
    """Non-hidden sub-folders of `directory`, sorted (the class names of an image-folder split)."""
    return sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))


def image_names(directory: Path) -> list[str]:
    """Names of the non-hidden image files in `directory` (not recursive), sorted; other files are skipped.
    os.scandir, not Path objects: an ImageNet class folder is listed in milliseconds."""
    return sorted(e.name for e in os.scandir(directory) if not e.name.startswith(".")
                  and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS and e.is_file())


def folder_layout(root: Path) -> tuple[Path, Path, list[str]]:
    """(train dir, val dir, classes) of an image-folder tree root/train/<class>/*, root/val/<class>/* (or
    test/), checked with one-line errors; the one layout check of the resident and the streamed loaders."""
    train = root / "train"
    if not train.is_dir():
        raise UserError(f"image folder {root} has no train/ subfolder; expected train/<class>/*, val/<class>/*")
    classes = class_dirs(train)
    if not classes:
        raise UserError(f"{train} has no class subfolders; expected train/<class>/<image files>")
    val = next((root / v for v in ("val", "test") if (root / v).is_dir()), None)
    if val is None:
        raise UserError(f"image folder {root} has no val/ (or test/) subfolder; expected val/<class>/*")
    unknown = sorted(set(class_dirs(val)) - set(classes))
    if unknown:
        raise UserError(f"{val} has class folders {unknown[:5]} that train/ lacks; train classes are {classes[:10]}")
    return train, val, classes


def class_tree_files(split: Path, classes: list[str], require: bool) -> tuple[list[str], np.ndarray]:
    """(`class/file` names, int64 labels) of split/<class>/* for the given classes; with `require` an
    empty class folder is an error, and an empty split always is."""
    files: list[str] = []
    labels: list[int] = []
    for label, c in enumerate(classes):
        if not (split / c).is_dir():
            continue
        names = image_names(split / c)
        if require and not names:
            raise UserError(f"class folder {split / c} holds no images (allowed: {', '.join(IMAGE_EXTENSIONS)})")
        files += [f"{c}/{n}" for n in names]
        labels += [label] * len(names)
    if not files:
        raise UserError(f"{split} holds no images; expected {split}/<class>/<image files>")
    return files, np.asarray(labels, dtype=np.int64)


def list_images(directory: Path) -> list[Path]:
    """Image files in `directory` (not recursive), sorted; files with other extensions are skipped."""
    return [directory / n for n in image_names(directory)]


def read_images(paths: list[Path], image_size: int | None) -> np.ndarray:
    """Load images as RGB (resized to image_size x image_size if given) into one (N, H, W, 3) uint8 array."""
    Image = pil_image()
    out: np.ndarray | None = None                         # allocated at the first image: no list-then-stack copy
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                if image_size is not None:
                    im = im.resize((image_size, image_size), bilinear_filter(Image))
                arr = np.asarray(im, dtype=np.uint8)
        except Exception as e:                            # Pillow raises OSError, ValueError, DecompressionBombError...
            raise UserError(f"cannot read image {p}: {e}; remove it or replace it with a valid image") from None
        if out is None:
            out = np.empty((len(paths), *arr.shape), np.uint8)
        elif arr.shape != out.shape[1:]:
            raise UserError(f"images differ in size: {paths[0]} is {out.shape[2]}x{out.shape[1]}, {p} is "
                            f"{arr.shape[1]}x{arr.shape[0]}; pass image_size=... to resize them all")
        out[i] = arr
    return out if out is not None else np.zeros((0, image_size or 0, image_size or 0, 3), np.uint8)


def read_class_tree(root: Path, classes: list[str], image_size: int | None,
                    require: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Images of `root/<class>/*` for the given classes -> (x, y) (see `class_tree_files` for `require`)."""
    files, labels = class_tree_files(root, classes, require)
    return read_images([root / f for f in files], image_size), labels


def resize_images(x: np.ndarray, size: int) -> np.ndarray:
    """Resize (N, H, W, C) uint8 images to size x size, bilinear, one channel at a time (any C)."""
    if x.shape[1:3] == (size, size):
        return x
    Image = pil_image()
    out = np.empty((len(x), size, size, x.shape[3]), np.uint8)
    for i, img in enumerate(x):
        for c in range(x.shape[3]):
            out[i, :, :, c] = np.asarray(Image.fromarray(img[:, :, c]).resize((size, size), bilinear_filter(Image)))
    return out


# ----------------------------------------------------------------------------- npz

NPZ_CONTENTS = "x, y [, x_test, y_test, x_unlabeled, classes, flip]"   # what a training .npz holds


def read_npz(path: Path, expected: str = NPZ_CONTENTS) -> dict[str, np.ndarray]:
    """All arrays of a .npz file; object arrays are refused (loading them would unpickle, which can run code)."""
    hint = f"expected np.savez output with plain arrays {expected}"
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise UserError(f"cannot read .npz file {path}: {e.strerror or e}") from None
    if head.startswith(b"\x93NUMPY"):
        raise UserError(f"{path} is a single-array NumPy .npy file, not an .npz archive; {hint}")
    if not head.startswith(b"PK"):                        # every zip archive, so every .npz, starts with PK
        raise UserError(f"{path} is not a NumPy .npz archive (" + (f"it starts with {head!r}" if head else
                        "it is empty") + f"); {hint}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: _npz_member(f, k, path) for k in f.files}
    except UserError:
        raise
    except Exception as e:                                # BadZipFile, truncated members, OSError...
        raise UserError(f"cannot read .npz file {path}: {' '.join(str(e).split())}; {hint}") from None
    return arrays


def _npz_member(f: Any, key: str, path: Path) -> np.ndarray:
    """One array of an open .npz; an object array or a member that is no array is a UserError."""
    try:
        arr = f[key]
    except ValueError as e:
        if "allow_pickle" not in str(e):
            raise
        raise UserError(f"npz file {path}: {key} is an object array (dtype=object), which only loads with "
                        f"allow_pickle=True, and unpickling a data file can run code; save {key} as a plain "
                        f"numeric or string array") from None
    if not isinstance(arr, np.ndarray):
        raise UserError(f"npz file {path}: member {key!r} is not a NumPy array; expected np.savez output")
    return arr


def uint8_advice(x: np.ndarray, name: str = "x", torch_style: bool = False) -> str:
    """What non-uint8 images hold and how to convert them, judged from their values (the tail of a message
    after the dtype): integers within 0..255 need only a cast, floats in [0, 1] a scaling, others a rescale."""
    cast = ".to(torch.uint8)" if torch_style else ".astype(np.uint8)"
    if x.size == 0 or x.dtype.kind not in "iuf":
        return "; store the images as uint8 values 0..255"
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        return " holding NaN or Inf; images must be finite values 0..255 stored as uint8"
    lo, hi = x.min(), x.max()
    if x.dtype.kind == "f" and 0 <= lo and hi <= 1:
        return f" in [0, 1]; convert with ({name} * 255).round(){cast}"
    if 0 <= lo and hi <= 255:
        return (f" holding {lo:g}..{hi:g}; convert with {name}.round(){cast}" if x.dtype.kind == "f"
                else f" holding {lo}..{hi}; convert with {name}{cast}")
    return f" holding {lo:g}..{hi:g}, outside 0..255; rescale them to 0..255 and store them as uint8"


def as_nhwc(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    """Check an npz image array is uint8 (N, H, W) or (N, H, W, C) and return it as NHWC."""
    if x.dtype != np.uint8:
        raise UserError(f"npz file {path}: {key} must be uint8, got {x.dtype}{uint8_advice(x, key)}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise UserError(f"npz file {path}: {key} must have shape (N, H, W) or (N, H, W, C), got {x.shape}")
    return x


def as_labels(y: np.ndarray, key: str, n: int, path: Path) -> np.ndarray:
    """Check an npz label array is integer, non-negative, with one label per image; return int64 (N,)."""
    if not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"npz file {path}: {key} must be integer class indices, got {y.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise UserError(f"npz file {path}: {key} has shape {y.shape} but there are {n} images; lengths must match")
    if len(y) and y.min() < 0:
        raise UserError(f"npz file {path}: {key} has negative label {y.min()}; labels must be 0..K-1")
    return y.astype(np.int64)


def stratified_holdout(y: np.ndarray, fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (keep, test) taking `fraction` of each class (at least 1 if it has 2+) as test."""
    test = class_share(y, fraction, seed)
    return np.setdiff1d(np.arange(len(y)), test), test
