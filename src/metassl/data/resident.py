"""A data set resident on the training device (small data: MNIST, CIFAR, SVHN, .npz, small folders).

Images stay uint8 on the device; each iteration gathers its batch by index (data/sampling.py) and
augments it there with batched tensor ops (data/augment.py): no DataLoader, no worker, no per-sample
Python loop, so the data path never stalls the step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from ..batch import Batch
from ..torch_utils import to_nchw
from .augment import channel_stats, normalize, strong_augment, to_float, weak_augment
from .sampling import UnlabeledSchedule, batch_indices
from .sources import ImageData
from .split import Split


@dataclass
class DeviceData:
    """The whole data set as uint8 NCHW tensors on the training device, plus the split."""

    x_train: Tensor           # uint8 (N, C, H, W) (or float, used as is); unlabeled-only images appended last
    y_train: Tensor           # int64 (N,), -1 for unlabeled-only images
    x_test: Tensor
    y_test: Tensor
    labeled: Tensor           # int64 indices into x_train (CPU)
    unlabeled: Tensor
    val: Tensor
    mean: Tensor              # (C,) float32 on the device, on the 0..1 scale
    std: Tensor
    flip: bool
    translate: int
    classes: list[str]
    channels_last: bool = False
    split: Split | None = None   # the labeled/unlabeled/validation indices (saved as split.json)
    pad_mode: str = "reflect"    # the translate's padding: reflect | zeros (black, before normalisation)
    meta: Tensor | None = None   # held-out labeled indices of the meta-gradient (meta_holdout > 0), else None

    @property
    def shape(self) -> tuple[int, int]:
        """(in_channels, image_size)."""
        return self.x_train.shape[1], self.x_train.shape[2]

    def view(self, x_u8: Tensor, kind: str) -> Tensor:
        """One augmented, normalised view of a batch: 'weak' (translate+flip), 'strong' or 'none'. uint8 images
        are mapped to [0, 1]; float inputs (tabular features as (N, D, 1, 1), see estimator.py) are used as is."""
        x = to_float(x_u8) if x_u8.dtype == torch.uint8 else x_u8
        if kind == "weak":
            x = weak_augment(x, self.translate, self.flip, self.pad_mode)
        elif kind == "strong":
            x = strong_augment(x, self.translate, self.flip, pad_mode=self.pad_mode)
        x = normalize(x, self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def batch(self, idx_lb: Tensor, idx_ulb: Tensor | None, views: tuple[str, ...], pos_ulb: Tensor | None = None) -> Batch:
        dev = self.x_train.device
        idx_lb = idx_lb.to(dev, non_blocking=True)
        x_ulb, y_ulb, pos = [], None, None
        if idx_ulb is not None and views:
            idx_ulb = idx_ulb.to(dev, non_blocking=True)
            raw = self.x_train[idx_ulb]
            x_ulb = [self.view(raw, v) for v in views]
            y_ulb = self.y_train[idx_ulb]
            pos = None if pos_ulb is None else pos_ulb.to(dev, non_blocking=True)
        return Batch(self.view(self.x_train[idx_lb], "weak"), self.y_train[idx_lb], x_ulb, y_ulb, pos)

    def batches(self, start: int, end: int, views: tuple[str, ...], batch_size: int, unlabeled: UnlabeledSchedule,
                seed: int, rank: int = 0, world: int = 1) -> Iterator[Batch]:
        """The batches of iterations start..end-1 (this rank's shard of each global batch)."""
        pool = torch.arange(len(self.unlabeled))
        for it in range(start, end):
            idx_lb = batch_indices(it, self.labeled, batch_size, seed, rank, world)
            pos_ulb = (batch_indices(it, pool, unlabeled.size_at(it), seed + 1, rank, world, unlabeled.first(it))
                       if views and len(self.unlabeled) else None)     # positions in the unlabeled pool
            batch = self.batch(idx_lb, None if pos_ulb is None else self.unlabeled[pos_ulb], views, pos_ulb)
            if self.meta is not None:                  # the held-out labeled batch, its own order (seed + 2)
                idx_meta = batch_indices(it, self.meta, batch_size, seed + 2, rank, world).to(self.x_train.device)
                batch.x_meta, batch.y_meta = self.view(self.x_train[idx_meta], "weak"), self.y_train[idx_meta]
            yield batch

    def pool_batches(self, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """This rank's contiguous shard of the unlabeled pool as (positions in the pool, normalised images not
        augmented, true labels or -1) chunks: the whole-pool passes of a label bank (algorithms/selftrain.py)."""
        n = len(self.unlabeled)
        lo, hi = rank * n // world, (rank + 1) * n // world
        for i in range(lo, hi, batch_size):
            pos = torch.arange(i, min(i + batch_size, hi))
            idx = self.unlabeled[pos].to(self.x_train.device)
            yield pos.to(self.x_train.device), self.view(self.x_train[idx], "none"), self.y_train[idx]

    def labeled_batches(self, batch_size: int, held_out: bool = False, rank: int = 0,
                        world: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        """This rank's shard of every labeled image (or of the held-out meta part) as (normalised images not
        augmented, labels) chunks: g_l over all labels for a whole-pool meta-gradient."""
        idx = self.meta if held_out and self.meta is not None else self.labeled
        lo, hi = rank * len(idx) // world, (rank + 1) * len(idx) // world
        for i in range(lo, hi, batch_size):
            j = idx[i:min(i + batch_size, hi)].to(self.x_train.device)
            yield self.view(self.x_train[j], "none"), self.y_train[j]

    def eval_batches(self, split: str, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor]]:
        """This rank's contiguous shard of 'test' or 'val' as (normalised images, labels) chunks, not augmented
        (evaluate.error_counts counts the errors; the trainer sums the counts over ranks)."""
        if split == "test":
            x, y = self.x_test, self.y_test
        else:
            vi = self.val.to(self.x_train.device)
            x, y = self.x_train[vi], self.y_train[vi]
        lo, hi = rank * len(x) // world, (rank + 1) * len(x) // world
        for i in range(lo, hi, batch_size):
            yield self.view(x[i:min(i + batch_size, hi)], "none"), y[i:min(i + batch_size, hi)]


def prepare_data(data: ImageData, split: Split, device: torch.device, flip: str = "auto", translate: int = 0,
                 channels_last: bool = False, pad_mode: str = "reflect") -> DeviceData:
    """Move images to the device once; normalisation statistics from the whole training set."""
    x_train, y_train = data.x_train, data.y_train.astype(np.int64)
    unlabeled = split.unlabeled
    if data.x_unlabeled is not None and len(data.x_unlabeled):
        extra = np.arange(len(x_train), len(x_train) + len(data.x_unlabeled))
        x_train = np.concatenate([x_train, data.x_unlabeled])
        y_train = np.concatenate([y_train, -np.ones(len(data.x_unlabeled), np.int64)])
        unlabeled = np.concatenate([unlabeled, extra])
    xt = to_nchw(x_train, device)
    mean, std = channel_stats(xt)
    do_flip = data.flip if flip == "auto" else flip == "true"
    return DeviceData(xt, torch.from_numpy(y_train).to(device), to_nchw(data.x_test, device),
                      torch.from_numpy(data.y_test.astype(np.int64)).to(device),
                      torch.from_numpy(split.labeled), torch.from_numpy(unlabeled), torch.from_numpy(split.val),
                      mean.to(device), std.to(device), do_flip, translate, list(data.classes), channels_last, split,
                      pad_mode, torch.from_numpy(split.meta) if len(split.meta) else None)
