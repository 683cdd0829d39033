"""An image-folder data set streamed from disk (ImageNet scale): Pillow decoding and the spatial
augmentation (random-resized crop + flip) in DataLoader workers (data/imagefolder.py), normalisation
and any strong augmentation on the device. Same interface as DeviceData (data/resident.py).

    metassl train --preset imagenet-10pct data_dir=/data/imagenet labels_file=10percent.txt
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from ..batch import Batch
from ..errors import UserError
from . import imagefolder
from .augment import normalize, strong_augment, to_float
from .sampling import UnlabeledSchedule
from .split import Split, labeled_split


class StreamingData:
    """Train/val image folders read on the fly; batches and evaluation sharded by rank."""

    def __init__(self, root: str, size: int, num_labels: int, split_seed: int, labels_file: str,
                 include_labeled: bool, device: torch.device, workers: int, channels_last: bool = False) -> None:
        self.index = imagefolder.scan(root)
        self.size, self.device, self.workers, self.channels_last = size, device, workers, channels_last
        self.classes = list(self.index.classes)
        y = np.asarray(self.index.train_labels, dtype=np.int64)
        if labels_file:
            lab = imagefolder.read_subset(self.index, labels_file)
            rest = np.setdiff1d(np.arange(len(y)), lab) if not include_labeled else np.arange(len(y))
            self.split = Split(lab.astype(np.int64), rest.astype(np.int64), np.empty(0, np.int64))
        else:
            self.split = labeled_split(y, num_labels, len(self.classes), split_seed, 0, include_labeled)
        self.labeled = torch.from_numpy(self.split.labeled)
        self.unlabeled = torch.from_numpy(self.split.unlabeled)
        self.val = torch.empty(0, dtype=torch.long)
        self.mean, self.std = self._stats()
        self.flip, self.translate = True, 0

    @property
    def shape(self) -> tuple[int, int]:
        return 3, self.size

    def _stats(self) -> tuple[Tensor, Tensor]:
        """Per-channel mean/std from up to 512 evenly spaced training images (centre crops)."""
        loader, _ = imagefolder.eval_loader(self.index, self.size, batch_size=64, num_workers=0)
        xs = []
        for k, (x, _) in enumerate(loader):
            xs.append(to_float(x))
            if k >= 7:
                break
        x = torch.cat(xs)
        return x.mean((0, 2, 3)).to(self.device), x.std((0, 2, 3)).clamp_min(1 / 255).to(self.device)

    def view(self, x_u8: Tensor, kind: str) -> Tensor:
        x = to_float(x_u8.to(self.device, non_blocking=True))
        if kind == "strong":
            x = strong_augment(x, 0, False)      # crop and flip were done in the worker
        x = normalize(x, self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def batches(self, start: int, end: int, views: tuple[str, ...], batch_size: int, unlabeled: UnlabeledSchedule,
                seed: int, rank: int = 0, world: int = 1) -> Iterator[Batch]:
        loader = imagefolder.train_loader(self.index, self.labeled, self.unlabeled, views, batch_size,
                                          unlabeled, seed, start, end, self.size, self.workers, rank, world)
        for raw in loader:
            yield Batch(self.view(raw.x_lb, "weak"), raw.y_lb.to(self.device),
                        [self.view(x, v) for x, v in zip(raw.x_ulb, views)],
                        None if raw.y_ulb is None else raw.y_ulb.to(self.device))

    def eval_batches(self, split: str, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        """This rank's shard of the val/ folder (the test set) as (normalised centre crops, labels) chunks."""
        if split != "test":
            raise UserError("num_val is not supported for streamed image folders; the val/ folder is the test set")
        loader, _ = imagefolder.eval_loader(self.index, self.size, batch_size=batch_size, num_workers=self.workers,
                                            rank=rank, world=world)
        for x, y in loader:
            yield self.view(x, "none"), y.to(self.device)
