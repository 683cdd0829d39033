"""Every training label, labeled loss only: the upper reference of the comparison table.

Same step as `supervised` (cross-entropy on a labeled batch); `all_labels` makes the trainer split with
num_labels=-1, so the labeled pool is the whole training set (minus any validation images).
"""
from __future__ import annotations

from .base import register
from .supervised import Supervised


@register("fully-supervised")
class FullySupervised(Supervised):
    all_labels = True   # read by the trainer: num_labels=-1 for the split
