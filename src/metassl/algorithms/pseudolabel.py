"""Pseudo-Label (Lee, ICML-W 2013), in the thresholded form of the FixMatch / USB baselines.

    y^_b = argmax p(y|x_u,b),  m_b = 1(max p(y|x_u,b) >= pseudolabel_threshold)
    loss = CE(f(x_lb), y_lb) + w(t) * pseudolabel_weight * (1/B_u) sum_b m_b CE(f(x_u,b), y^_b)

The hard labels come from the same (weak) view and pass they train, detached. Lee's original keeps
every argmax and ramps the weight to 3; the 0.95 threshold and weight 1 are USB's / Sohn et al.'s.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..batch import Batch
from .base import Algorithm, StepContext, StepOutput, register
from .common import check, hard_pseudo_labels, masked_ce


@register("pseudolabel")
class PseudoLabel(Algorithm):
    views = ("weak",)
    keys = ("pseudolabel_threshold", "pseudolabel_weight")

    def __init__(self, pseudolabel_threshold: float = 0.95, pseudolabel_weight: float = 1.0) -> None:
        self.pseudolabel_threshold, self.pseudolabel_weight = pseudolabel_threshold, pseudolabel_weight

    @classmethod
    def from_config(cls, cfg: Config) -> PseudoLabel:
        check("pseudolabel_threshold", cfg.pseudolabel_threshold, 0 <= cfg.pseudolabel_threshold <= 1,
              "a number in [0, 1]")
        check("pseudolabel_weight", cfg.pseudolabel_weight, cfg.pseudolabel_weight >= 0, "a number >= 0")
        return cls(cfg.pseudolabel_threshold, cfg.pseudolabel_weight)

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepOutput:
        logits_x_lb = model(batch.x_lb).float()                          # (B_l, C)
        logits_x_ulb = model(batch.x_ulb[0]).float()                     # (B_u, C)
        probs = F.softmax(logits_x_ulb.detach(), dim=1)                  # (B_u, C), no gradient
        y_pseudo, mask = hard_pseudo_labels(probs, self.pseudolabel_threshold)   # (B_u,), (B_u,)
        loss_cls = F.cross_entropy(logits_x_lb, batch.y_lb)
        loss_pl = masked_ce(logits_x_ulb, y_pseudo, mask)
        loss = loss_cls + ctx.consistency_weight * self.pseudolabel_weight * loss_pl
        return StepOutput(loss, {"loss": loss.detach(), "loss_cls": loss_cls.detach(), "loss_pl": loss_pl.detach(),
                                 "mask": mask.mean()}, (probs, probs))
