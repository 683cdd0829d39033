"""The one object data sources hand to algorithms: a batch already augmented and normalised on the device.

Data code fills it with the views an algorithm asks for (`Algorithm.views`); algorithms read it. Neither
side imports the other: both import this module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Protocol

from torch import Tensor

if TYPE_CHECKING:
    from .data.sampling import UnlabeledSchedule
    from .data.split import Split


@dataclass
class Batch:
    """One iteration's data, already augmented and normalised on the training device."""

    x_lb: Tensor                     # (B_l, C, H, W) labeled images
    y_lb: Tensor                     # (B_l,) int64 labels
    x_ulb: list[Tensor]              # the unlabeled views the algorithm asked for, each (B_u, C, H, W)
    y_ulb: Tensor | None = None      # (B_u,) true labels of the unlabeled images, diagnostics only: never in a loss
    idx_ulb: Tensor | None = None    # (B_u,) int64 positions of the unlabeled images in the unlabeled pool (per-image state: FlexMatch)
    x_meta: Tensor | None = None     # (B_l, C, H, W) held-out labeled images (meta_holdout > 0): only the meta-gradient's g_l
    y_meta: Tensor | None = None     # (B_l,) their labels; no classification loss ever sees them


@dataclass
class PoolPasses:
    """Whole-data passes for a label bank (an algorithm that relabels the entire unlabeled pool between rounds):
    this rank's shard of each pass, and a sum over processes that assembles the shards on every rank."""

    pool: Callable[[int], Iterator[tuple[Tensor, Tensor, Tensor]]]   # batch size -> (positions, images, labels or -1)
    labeled: Callable[[int, bool], Iterator[tuple[Tensor, Tensor]]]  # (batch size, held-out part) -> (images, labels)
    size: int                        # images in the unlabeled pool
    flip: bool                       # a horizontal flip keeps the label (test-time augmentation allowed)
    sum_all: Callable[[Tensor], Tensor]   # in-place sum over processes (identity on one process)


class DataSource(Protocol):
    """What the trainer reads from a data set (data/resident.py's DeviceData, data/streaming.py's StreamingData):
    the split, the classes and image shape, the normalisation, training batches and evaluation chunks."""

    classes: list[str]
    split: Split                     # the labeled / unlabeled / validation indices (split.json)
    labeled: Tensor                  # int64 indices of the labeled images
    unlabeled: Tensor                # int64 indices of the unlabeled pool
    val: Tensor                      # int64 indices of the validation images (may be empty)
    mean: Tensor                     # (C,) normalisation, on the device
    std: Tensor
    flip: bool

    @property
    def shape(self) -> tuple[int, int]: ...          # (in_channels, image_size)

    def batches(self, start: int, end: int, views: tuple[str, ...], batch_size: int, unlabeled: UnlabeledSchedule,
                seed: int, rank: int = 0, world: int = 1) -> Iterator[Batch]: ...

    def eval_batches(self, split: str, batch_size: int, rank: int = 0,
                     world: int = 1) -> Iterator[tuple[Tensor, Tensor]]: ...
