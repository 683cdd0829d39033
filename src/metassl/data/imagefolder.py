"""Streaming image-folder source for ImageNet-scale trees: Pillow decoding in DataLoader workers.

Layout: root/train/<class>/<image>, root/val/<class>/<image> (or test/). Only the file list is held in
memory (as numpy byte strings: one buffer, cheap to pickle to workers, no copy-on-access growth).
One DataLoader item is one whole iteration's batch: its images come from `sampling.batch_indices`,
and every crop/flip is drawn from a numpy Generator seeded by (seed, iteration, stream, position in
the global batch), so a resumed run, any number of workers and any number of ranks (whose shards
concatenate to the world=1 batch) see identical pixels. Outputs are uint8 CHW; normalisation and
strong augmentation happen on the device (`augment.py`). Batch sizes given here are global.
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, get_worker_info

from metassl.data.formats import bilinear_filter, pil_image, class_tree_files, folder_layout
from metassl.data.sampling import UnlabeledSchedule, batch_indices
from metassl.data.split import class_balanced
from metassl.errors import UserError

VIEWS = ("weak", "strong")
AREA, ASPECT = (0.1, 1.0), (0.8, 1.25)        # the authors' RandomResizedCrop ranges
PREFETCH = 2                                   # per worker; each item is already a whole iteration's batch


@dataclass
class FolderIndex:
    """The scanned tree: sorted classes and the relative `class/file` paths with int64 labels."""

    root: Path
    classes: list[str]
    train_files: np.ndarray        # bytes 'class/file', relative to root/train, sorted
    train_labels: np.ndarray       # int64
    val_dir: str                   # "val" or "test"
    val_files: np.ndarray          # bytes 'class/file', relative to root/<val_dir>
    val_labels: np.ndarray

    def train_path(self, i: int) -> Path:
        return self.root / "train" / self.train_files[i].decode()

    def val_path(self, i: int) -> Path:
        return self.root / self.val_dir / self.val_files[i].decode()


_SCANS: dict[str, FolderIndex] = {}


def _list(split: Path, classes: list[str], require: bool) -> tuple[np.ndarray, np.ndarray]:
    """`class/file` byte strings (compact for a million files) and labels of split/<class>/*."""
    files, labels = class_tree_files(split, classes, require)
    return np.array([f.encode() for f in files], dtype=bytes), labels


def scan(root: str | Path, refresh: bool = False) -> FolderIndex:
    """List root/train/<class>/* and root/val/<class>/* once per process (cached in memory only)."""
    root = Path(root).expanduser().resolve()
    if not refresh and str(root) in _SCANS:
        return _SCANS[str(root)]
    train, val, classes = folder_layout(root)
    tf, tl = _list(train, classes, require=True)
    vf, vl = _list(val, classes, require=False)
    _SCANS[str(root)] = FolderIndex(root, classes, tf, tl, val.name, vf, vl)
    return _SCANS[str(root)]


# ----------------------------------------------------------------------------- labeled-subset files

def read_subset(index: FolderIndex, path: str | Path) -> np.ndarray:
    """Train indices (sorted, unique) named by a subset file: `file`, `class/file` or `train/class/file` lines."""
    rel = {f.decode(): i for i, f in enumerate(index.train_files)}
    by_name: dict[str, list[int]] = {}
    for r, i in rel.items():
        by_name.setdefault(r.rsplit("/", 1)[1], []).append(i)

    def find(entry: str) -> int | None:
        parts = entry.replace("\\", "/").strip("/").split("/")
        if len(parts) >= 2:
            return rel.get(f"{parts[-2]}/{parts[-1]}")
        guess = rel.get(f"{entry.split('_')[0]}/{entry}")       # ImageNet names start with their class (wnid_)
        hits = by_name.get(entry, [])
        return guess if guess is not None else hits[0] if len(hits) == 1 else None

    try:
        lines = Path(path).expanduser().read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read labeled-subset file {path}: {e}") from None
    found, missing = [], []
    for line in (s.strip() for s in lines):
        if not line or line.startswith("#"):
            continue
        i = find(line)
        if i is None and len(line.split()) > 1:                  # "file label" style lines
            i = find(line.split()[0])
        if i is None:
            missing.append(line)
        else:
            found.append(i)
    if missing:
        raise UserError(f"labeled-subset file {path}: {len(missing)} entries not found (or ambiguous) under "
                        f"{index.root / 'train'}, e.g. {missing[:3]}")
    if not found:
        raise UserError(f"labeled-subset file {path} lists no images; expected one image path per line")
    return np.unique(np.array(found, dtype=np.int64))


def make_subset(root: str | Path | FolderIndex, out_path: str | Path, fraction: float | None = None,
                per_class: int | None = None, seed: int = 0) -> np.ndarray:
    """Write a class-balanced subset file (`class/file` lines): per_class images per class, or
    max(1, round(fraction * n_c)) of each class c (stratified, like ImageNet's 10% split); return the indices."""
    index = root if isinstance(root, FolderIndex) else scan(root)
    if (fraction is None) == (per_class is None):
        raise UserError("make_subset needs exactly one of fraction (0 < f <= 1) or per_class (>= 1)")
    if (fraction is not None and not 0 < fraction <= 1) or (per_class is not None and per_class < 1):
        raise UserError(f"make_subset: need 0 < fraction <= 1 or per_class >= 1, got {fraction}, {per_class}")
    take = (lambda n_c: per_class) if per_class is not None else (lambda n_c: max(1, round(fraction * n_c)))
    for c, n_c in zip(index.classes, np.bincount(index.train_labels, minlength=len(index.classes))):
        if take(n_c) > n_c:
            raise UserError(f"class {c} has {n_c} train images, fewer than per_class={take(n_c)}")
    idx = class_balanced(index.train_labels, take, seed % 2**63)
    out = Path(out_path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.writelines(index.train_files[i].decode() + "\n" for i in idx)
    os.replace(tmp, out)
    return idx


# ----------------------------------------------------------------------------- per-image transforms

def _open(path: Path) -> Any:
    """Decode one image as RGB; any failure becomes a one-line UserError naming the file."""
    Image = pil_image()
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except Exception as e:                      # OSError, ValueError, SyntaxError, DecompressionBombError...
        raise UserError(f"cannot read image {path}: {' '.join(str(e).split())}; remove or replace it") from None


def _crop_box(w: int, h: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (left, top, width, height): 10 tries, then a centre crop of clamped aspect."""
    for _ in range(10):
        area = w * h * rng.uniform(*AREA)
        aspect = math.exp(rng.uniform(math.log(ASPECT[0]), math.log(ASPECT[1])))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch
    cw, ch = w, h
    if w / h < ASPECT[0]:
        ch = round(w / ASPECT[0])
    elif w / h > ASPECT[1]:
        cw = round(h * ASPECT[1])
    return (w - cw) // 2, (h - ch) // 2, cw, ch


def train_transform(img: Any, size: int, rng: np.random.Generator) -> Tensor:
    """Random-resized crop to size x size (area 0.1-1, aspect 0.8-1.25) + flip p=0.5 -> uint8 (3, S, S)."""
    Image = pil_image()
    left, top, cw, ch = _crop_box(*img.size, rng)
    out = img.resize((size, size), bilinear_filter(Image), box=(left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        out = out.transpose(getattr(Image, "Transpose", Image).FLIP_LEFT_RIGHT)
    return torch.from_numpy(np.array(out, dtype=np.uint8)).permute(2, 0, 1)


def eval_transform(img: Any, size: int, resize: int) -> Tensor:
    """Resize the shorter side to `resize`, centre-crop size x size -> uint8 (3, S, S) (deterministic)."""
    w, h = img.size
    nw, nh = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
    img = img.resize((nw, nh), bilinear_filter(pil_image()))
    left, top = int(round((nw - size) / 2)), int(round((nh - size) / 2))
    img = img.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)


# ----------------------------------------------------------------------------- data sets and loaders

@dataclass
class RawBatch:
    """One iteration's uint8 images as loaded (not normalised/augmented on the device yet)."""

    iteration: int
    x_lb: Tensor                   # uint8 (B_l/world, 3, S, S)
    y_lb: Tensor                   # int64
    x_ulb: list[Tensor]            # one uint8 (B_u/world, 3, S, S) per requested view
    y_ulb: Tensor | None           # true labels of the unlabeled images: diagnostics only

    def _map(self, f: Any) -> "RawBatch":
        return RawBatch(self.iteration, f(self.x_lb), f(self.y_lb), [f(x) for x in self.x_ulb],
                        None if self.y_ulb is None else f(self.y_ulb))

    def pin_memory(self) -> "RawBatch":
        return self._map(lambda t: t.pin_memory())

    def to(self, device: torch.device | str, non_blocking: bool = True) -> "RawBatch":
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))


@dataclass
class _Failed:
    """A worker's UserError message, carried as data so the main process raises it as one line."""

    message: str


def _guard(load: Any) -> Any:
    """Run load(); in a worker turn a UserError into a _Failed item (DataLoader would wrap the exception)."""
    try:
        return load()
    except UserError as e:
        if get_worker_info() is None:
            raise
        return _Failed(str(e))


class _Loader(DataLoader):
    """DataLoader whose iterator raises a worker's failure as the original one-line UserError."""

    def __iter__(self) -> Iterator[Any]:                       # type: ignore[override]
        for item in super().__iter__():
            if isinstance(item, _Failed):
                raise UserError(item.message)
            yield item


class IterationBatches(Dataset):
    """Item `it` (an iteration number in [start, end)) = that iteration's RawBatch for this rank."""

    def __init__(self, index: FolderIndex, labeled_idx: Sequence[int], unlabeled_idx: Sequence[int],
                 views: Sequence[str], batch_size: int, unlabeled: UnlabeledSchedule, seed: int,
                 start: int, end: int, size: int, rank: int = 0, world: int = 1) -> None:
        bad = [v for v in views if v not in VIEWS]
        if bad or batch_size % world or unlabeled.size % world or not 0 <= rank < world:
            raise UserError(f"need views in {VIEWS} and global batch sizes divisible by world={world} "
                            f"(rank {rank}); got views {list(views)}, {batch_size}, {unlabeled.size}")
        if len(labeled_idx) == 0 or (views and unlabeled.size and len(unlabeled_idx) == 0):
            raise UserError("the labeled (and, with unlabeled views, the unlabeled) index set must not be empty")
        self.index, self.views, self.size, self.seed = index, tuple(views), size, seed
        self.lab = torch.as_tensor(np.asarray(labeled_idx), dtype=torch.long)
        self.unl = torch.as_tensor(np.asarray(unlabeled_idx), dtype=torch.long)
        self.bl, self.unlabeled, self.start, self.end, self.rank, self.world = (
            batch_size, unlabeled, start, end, rank, world)

    def __len__(self) -> int:
        return self.end - self.start

    def _crops(self, idx: Tensor, it: int, streams: Sequence[int], per: int) -> list[Tensor]:
        """Decode each image once; one crop per stream, seeded by (seed, it, stream, global position)."""
        out = [torch.empty(len(idx), 3, self.size, self.size, dtype=torch.uint8) for _ in streams]
        for k, i in enumerate(idx.tolist()):
            img = _open(self.index.train_path(i))
            for o, s in zip(out, streams):
                rng = np.random.default_rng([self.seed % 2**63, it, s, self.rank * per + k])
                o[k] = train_transform(img, self.size, rng)
        return out

    def _load(self, it: int) -> RawBatch:
        lab = batch_indices(it, self.lab, self.bl, self.seed, self.rank, self.world)
        (x_lb,) = self._crops(lab, it, [0], self.bl // self.world)
        y_lb = torch.from_numpy(self.index.train_labels[lab.numpy()])
        size = self.unlabeled.size_at(it)
        if not self.views or not size:
            return RawBatch(it, x_lb, y_lb, [], None)
        unl = batch_indices(it, self.unl, size, self.seed + 1, self.rank, self.world, self.unlabeled.first(it))
        x_ulb = self._crops(unl, it, range(1, 1 + len(self.views)), size // self.world)
        return RawBatch(it, x_lb, y_lb, x_ulb, torch.from_numpy(self.index.train_labels[unl.numpy()]))

    def __getitem__(self, it: int) -> RawBatch:
        if not self.start <= it < self.end:
            raise IndexError(f"iteration {it} outside [{self.start}, {self.end})")
        return _guard(lambda: self._load(it))


class _EvalImages(Dataset):
    """Item k = (uint8 image, label) of val image positions[k], centre-cropped."""

    def __init__(self, index: FolderIndex, positions: range, size: int, resize: int) -> None:
        self.index, self.positions, self.size, self.resize = index, positions, size, resize

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, k: int) -> Any:
        i = self.positions[k]
        return _guard(lambda: (eval_transform(_open(self.index.val_path(i)), self.size, self.resize),
                               int(self.index.val_labels[i])))


def _collate_eval(items: list[Any]) -> Any:
    """Stack (image, label) items; pass a failure through for the main process to raise."""
    failed = next((t for t in items if isinstance(t, _Failed)), None)
    return failed or (torch.stack([t[0] for t in items]), torch.tensor([t[1] for t in items], dtype=torch.long))


def _worker_init(_: int) -> None:
    """One torch thread per worker: parallelism comes from the workers, not from intra-op threads."""
    torch.set_num_threads(1)


def _loader_kwargs(num_workers: int) -> dict[str, Any]:
    """Common DataLoader settings; a private generator keeps the global torch RNG untouched."""
    kw: dict[str, Any] = dict(num_workers=num_workers, persistent_workers=False, generator=torch.Generator(),
                              pin_memory=torch.cuda.is_available())
    if num_workers > 0:
        kw.update(prefetch_factor=PREFETCH, worker_init_fn=_worker_init)
    return kw


def train_loader(index: FolderIndex, labeled_idx: Sequence[int], unlabeled_idx: Sequence[int],
                 views: Sequence[str], batch_size: int, unlabeled: UnlabeledSchedule, seed: int, start: int,
                 end: int, size: int, num_workers: int, rank: int = 0, world: int = 1) -> DataLoader:
    """Yields the RawBatch of iterations start, start+1, ..., end-1 in order (global batch sizes)."""
    ds = IterationBatches(index, labeled_idx, unlabeled_idx, views, batch_size, unlabeled,
                          seed, start, end, size, rank, world)
    return _Loader(ds, batch_size=None, sampler=range(start, end), **_loader_kwargs(num_workers))


def shard(n: int, rank: int, world: int) -> range:
    """Rank's contiguous share of n items: [rank*n//world, (rank+1)*n//world)."""
    return range(rank * n // world, (rank + 1) * n // world)


def eval_loader(index: FolderIndex, size: int, resize: int | None = None, batch_size: int = 100,
                num_workers: int = 0, rank: int = 0, world: int = 1) -> tuple[DataLoader, range]:
    """(loader of (uint8 x, int64 y) over this rank's val shard in order, the val indices of that shard)."""
    positions = shard(len(index.val_files), rank, world)
    ds = _EvalImages(index, positions, size, resize or round(size / 0.875))   # 224 -> 256
    return _Loader(ds, batch_size=batch_size, shuffle=False, collate_fn=_collate_eval,
                   **_loader_kwargs(num_workers)), positions
