"""FixMatch (Sohn et al., NeurIPS 2020, Eq. 2-4): hard pseudo-labels from a weak view train a strong view.

    q_b  = softmax f(alpha(u_b))                       weak view (translate + flip), no gradient
    m_b  = 1(max q_b >= fixmatch_threshold),  q^_b = argmax q_b
    loss = CE(f(x_lb), y_lb) + w(t) * fixmatch_weight * (1/B_u) sum_b m_b CE(f(A(u_b)), q^_b)

A is the strong view (RandAugment, random magnitudes, + Cutout: data/augment.py `strong_augment`).
Labeled, weak and strong images go through one forward pass in train mode (the authors concatenate
them so BN sees one batch); q comes from that pass, detached. Defaults tau = 0.95, lambda_u = 1
(the paper; it has no ramp, here lambda_u follows the shared ramp w(t)). The paper draws mu = 7
unlabeled images per labeled one; `unlabeled_batch_size` sets that ratio (the bench uses 1:1).
metafixmatch.py is this step with a meta-corrected q (`diff fixmatch.py metafixmatch.py` shows the change).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..batch import Batch
from ..config import Config
from .base import Algorithm, StepContext, StepOutput, register
from .common import check, hard_pseudo_labels, joint_forward, masked_ce


@register("fixmatch")
class FixMatch(Algorithm):
    views = ("weak", "strong")
    keys = ("fixmatch_threshold", "fixmatch_weight")

    def __init__(self, fixmatch_threshold: float = 0.95, fixmatch_weight: float = 1.0) -> None:
        self.fixmatch_threshold, self.fixmatch_weight = fixmatch_threshold, fixmatch_weight

    @classmethod
    def from_config(cls, cfg: Config) -> FixMatch:
        check_fixmatch(cfg)
        return cls(cfg.fixmatch_threshold, cfg.fixmatch_weight)

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepOutput:
        logits_x_lb, logits_x_ulb_w, logits_x_ulb_s = joint_forward(model, batch)   # one forward, (B, C) each
        q = F.softmax(logits_x_ulb_w.detach(), dim=1)                    # (B_u, C), no gradient
        y_pseudo, mask = hard_pseudo_labels(q, self.fixmatch_threshold)  # (B_u,), (B_u,)
        loss_cls = F.cross_entropy(logits_x_lb, batch.y_lb)
        loss_fm = masked_ce(logits_x_ulb_s, y_pseudo, mask)
        loss = loss_cls + ctx.consistency_weight * self.fixmatch_weight * loss_fm
        return StepOutput(loss, {"loss": loss.detach(), "loss_cls": loss_cls.detach(), "loss_fm": loss_fm.detach(),
                                 "mask": mask.mean()}, (q, q))


def check_fixmatch(cfg: Config) -> None:
    check("fixmatch_threshold", cfg.fixmatch_threshold, 0 <= cfg.fixmatch_threshold <= 1, "a number in [0, 1]")
    check("fixmatch_weight", cfg.fixmatch_weight, cfg.fixmatch_weight >= 0, "a number >= 0")
