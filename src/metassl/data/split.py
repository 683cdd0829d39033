"""Which training images keep their labels: a class-balanced, seeded, saveable split.

The split depends only on (y, num_labels, seed, num_val), never on the training seed, so runs that
differ in model initialisation see the same labeled set and the split can be stored in a run directory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from metassl.errors import UserError

ALL_LABELS = -1   # num_labels value meaning "every training image not in val is labeled" (supervised reference)


@dataclass
class Split:
    """Sorted int64 indices into the training set: labeled, unlabeled and validation images, and the held-out
    labeled images of the meta-gradient (`meta_holdout`; disjoint from `labeled`, which the classification
    loss sees; empty by default and then not written to split.json)."""

    labeled: np.ndarray
    unlabeled: np.ndarray
    val: np.ndarray
    meta: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    def to_dict(self) -> dict[str, list[int]]:
        """JSON-friendly form (plain lists of ints) for the run directory."""
        keys = ("labeled", "unlabeled", "val") + (("meta",) if len(self.meta) else ())
        return {k: [int(i) for i in getattr(self, k)] for k in keys}

    @classmethod
    def from_dict(cls, d: dict) -> Split:
        """Inverse of to_dict; a missing or non-integer entry is a UserError."""
        try:
            return cls(**{k: np.sort(np.asarray(d[k], dtype=np.int64).reshape(-1))
                          for k in ("labeled", "unlabeled", "val") + (("meta",) if "meta" in d else ())})
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"bad saved split ({type(e).__name__}: {e}); expected lists 'labeled', 'unlabeled', "
                            f"'val' of integer indices") from None


def labeled_split(y: np.ndarray, num_labels: int, num_classes: int, seed: int, num_val: int = 0,
                  include_labeled_in_unlabeled: bool = False, meta_holdout: float = 0.0) -> Split:
    """Pick num_val/K validation then num_labels/K labeled images per class at random; the rest is unlabeled.

    num_labels = -1 labels every image outside val. For a fixed seed, each class is drawn from one
    permutation, so a smaller labeled set is a subset of a larger one (with the same num_val).
    meta_holdout > 0 moves the last round(share * num_labels/K) labeled images of each class's draw to
    `meta` (the meta-gradient's held-out labeled images): the same labels in all, fixed by the seed.
    """
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"labels must be a 1-D integer array, got {y.dtype} {y.shape}")
    if num_classes <= 0 or (len(y) and (y.min() < 0 or y.max() >= num_classes)):
        raise UserError(f"labels must lie in 0..{num_classes - 1} for num_classes={num_classes}")
    if num_labels != ALL_LABELS and num_labels <= 0:
        raise UserError(f"num_labels must be positive (or -1 for all labels), got {num_labels}")
    if num_labels != ALL_LABELS and num_labels % num_classes:
        raise UserError(f"num_labels={num_labels} is not divisible by the {num_classes} classes; "
                        f"use a multiple of {num_classes} (e.g. {max(1, num_labels // num_classes) * num_classes})")
    if num_val < 0 or num_val % num_classes:
        raise UserError(f"num_val={num_val} must be a non-negative multiple of the {num_classes} classes")
    per_label, per_val = num_labels // num_classes, num_val // num_classes
    labeled, unlabeled, val, meta = [], [], [], []
    for c, idx in enumerate(class_permutations(y, range(num_classes), np.random.default_rng(seed))):
        if len(idx) < per_val:
            raise UserError(f"class {c} has {len(idx)} images, fewer than the {per_val} per class that "
                            f"num_val={num_val} takes; lower num_val")
        v, rest = idx[:per_val], idx[per_val:]
        k = len(rest) if num_labels == ALL_LABELS else per_label
        if len(rest) < k:
            left = f" left after validation ({per_val} per class for num_val={num_val})" if per_val else ""
            raise UserError(f"class {c} has {len(rest)} images{left}, fewer than the {k} per class that "
                            f"num_labels={num_labels} needs; lower num_labels{' or num_val' if per_val else ''} "
                            f"(or use -1 for all)")
        m = round(meta_holdout * k)
        if meta_holdout > 0 and not 1 <= m < k:
            raise UserError(f"meta_holdout={meta_holdout} of {k} labels per class holds out {m}; it must leave at "
                            f"least one per class to each side: raise num_labels or change meta_holdout")
        val.append(v)
        labeled.append(rest[:k - m])
        meta.append(rest[k - m:k])
        unlabeled.append(rest if include_labeled_in_unlabeled else rest[k:])
    return Split(labeled=_sorted(labeled), unlabeled=_sorted(unlabeled), val=_sorted(val), meta=_sorted(meta))


def class_permutations(y: np.ndarray, classes: Iterable[int], rng: np.random.Generator) -> list[np.ndarray]:
    """Each class's row indices in a random order, drawn class by class from one generator: the one draw behind
    every class-balanced split here."""
    return [rng.permutation(np.flatnonzero(y == c)) for c in classes]


def class_share(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a class-balanced random share of the rows with a label (y >= 0): round(fraction * n_c)
    of each class's n_c rows, at least one where fraction > 0, and never a class's last row."""
    classes = np.unique(y[y >= 0])
    parts = [idx[:min(len(idx) - 1, max(1, round(fraction * len(idx)))) if fraction > 0 else 0]
             for idx in class_permutations(y, classes, np.random.default_rng(seed))]
    return _sorted(parts) if parts else np.zeros(0, np.int64)


def _sorted(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate per-class index arrays into one sorted int64 array."""
    return np.sort(np.concatenate(parts)).astype(np.int64)


def class_balanced(y: np.ndarray, take: Callable[[int], int], seed: int) -> np.ndarray:
    """Sorted int64 indices of take(n_c) random rows of each class c present in y (n_c its rows), drawn with
    class_permutations from one generator seeded `seed` (a subsample or a subset file, stratified by class)."""
    perms = class_permutations(y, np.unique(y), np.random.default_rng(seed))
    return _sorted([idx[:take(len(idx))] for idx in perms]) if perms else np.zeros(0, np.int64)
