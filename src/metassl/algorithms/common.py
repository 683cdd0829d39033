"""Small pieces the baseline algorithms share: the FixMatch family's joint forward, the unlabeled-loss terms, a BN guard.

Each is one tensor expression with its source; the algorithms stay one file each (fixmatch style).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..batch import Batch
from ..errors import UserError


def softmax_mse(logits: Tensor, target: Tensor) -> Tensor:
    """Squared error between softmax(logits) and target, averaged over classes and batch (Laine & Aila
    2017, Tarvainen & Valpola 2017, Berthelot et al. 2019 all use this 1/C normalisation). (B, C) -> ()."""
    return F.mse_loss(F.softmax(logits.float(), dim=1), target, reduction="mean")


def joint_forward(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
    """FixMatch's single train-mode forward of the labeled, weak and strong images together (so BN sees one
    batch, as its authors concatenate them): (logits_x_lb, logits_x_ulb_w, logits_x_ulb_s), float32."""
    x_lb, (x_ulb_w, x_ulb_s) = batch.x_lb, batch.x_ulb
    b, u = len(x_lb), len(x_ulb_w)
    logits = model(torch.cat([x_lb, x_ulb_w, x_ulb_s])).float()      # (B_l + 2 B_u, C)
    return logits[:b], logits[b:b + u], logits[b + u:]


def hard_pseudo_labels(probs: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """(argmax, mask): hard labels (B,) int64 and the float mask (B,) of rows with max prob >= threshold
    (Lee 2013 with the confidence threshold of Sohn et al. 2020, Eq. 2-4)."""
    conf, labels = probs.max(dim=1)
    return labels, (conf >= threshold).float()


def masked_ce(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """mean_b mask_b * CE(logits_b, labels_b): the mean over the whole batch, not over the kept rows
    (FixMatch Eq. 4: (1/mu B) sum 1(max q >= tau) H(q^, p))."""
    return (F.cross_entropy(logits.float(), labels, reduction="none") * mask).mean()


def sharpen(p: Tensor, temperature: float) -> Tensor:
    """MixMatch Eq. 7: p_i^(1/T) / sum_j p_j^(1/T), row-wise on (B, C)."""
    p = p ** (1.0 / temperature)
    return p / p.sum(dim=1, keepdim=True)


@contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """Forward passes inside use batch statistics but leave BN running statistics untouched.

    For the extra passes of VAT and MixMatch's label guessing (as their authors' code: VAT's
    `update_batch_stats=False`, MixMatch's BN updates kept from the main pass only). In train mode a
    BatchNorm with track_running_stats=False normalises with the batch and updates nothing.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.track_running_stats for m in bns]
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, s in zip(bns, saved):
            m.track_running_stats = s


def check(name: str, value, ok: bool, allowed: str) -> None:
    """One-line UserError for an out-of-range algorithm hyperparameter (checked when the algorithm is built)."""
    if not ok:
        raise UserError(f"{name}={value!r} is out of range; allowed: {allowed}")
