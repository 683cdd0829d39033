"""MetaFlexMatch: MetaFixMatch's correction inside FlexMatch's per-class curriculum thresholds (this project).

Exactly FlexMatch (flexmatch.py) with the target corrected as in metafixmatch.py:

    y~   = softmax f(alpha(u); theta_t)                    FlexMatch's weak-view q, detached
    y^   = proj(y~ - beta_t * meta_gradient(f, x_lb, y_lb, alpha(u), y~))      Eq. 13-16, then Eq. 6
    m_b  = 1(max p_b >= T_t(argmax p_b)),  p = y^ (meta_threshold_on=corrected) or y~ (plain)
    loss = CE(f(x_lb), y_lb) + w(t) * flexmatch_weight * (1/B_u) sum_b m_b CE(f(A(u_b)), argmax y^_b)

The learning status sigma_t that sets T_t counts the confident rows of the same p the mask reads, so with
`plain` FlexMatch's curriculum is untouched and the correction only relabels the rows it keeps (the
setting that was consistent inside FixMatch, docs/results/FINDINGS.md). `meta_target=soft` trains the
strong view on y^ itself. With beta_t = 0 the step is FlexMatch's (tested).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..batch import Batch
from ..config import Config
from .base import StepContext, StepOutput, register
from .common import joint_forward
from .flexmatch import FlexMatch, check_flexmatch
from .meta_gradient import CONFIG_KEYS
from .metafixmatch import MetaTarget


@register("metaflexmatch")
class MetaFlexMatch(FlexMatch):
    keys = FlexMatch.keys + CONFIG_KEYS + ("meta_target", "meta_threshold_on")

    def __init__(self, flexmatch_threshold: float = 0.95, flexmatch_weight: float = 1.0,
                 flexmatch_warmup: bool = True, *, eps_scale: float, **meta: str) -> None:
        super().__init__(flexmatch_threshold, flexmatch_weight, flexmatch_warmup)
        self.correction = MetaTarget(eps_scale, **meta)

    @classmethod
    def from_config(cls, cfg: Config) -> MetaFlexMatch:
        check_flexmatch(cfg)
        return cls(cfg.flexmatch_threshold, cfg.flexmatch_weight, cfg.flexmatch_warmup, **MetaTarget.options(cfg))

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepOutput:
        logits_x_lb, logits_x_ulb_w, logits_x_ulb_s = joint_forward(model, batch)   # one forward, (B, C) each
        y_tilde = F.softmax(logits_x_ulb_w.detach(), dim=1)              # (B_u, C), FlexMatch's q, no gradient
        y_hat = self.correction.correct(model, batch, y_tilde, ctx)            # (B_u, C), Eq. 13-16 then Eq. 6
        mask, thresholds = self.curriculum_mask(self.correction.thresholded(y_tilde, y_hat), batch, ctx)
        loss_cls = F.cross_entropy(logits_x_lb, batch.y_lb)
        loss_fm = self.correction.loss(logits_x_ulb_s, y_hat, mask)
        loss = loss_cls + ctx.consistency_weight * self.flexmatch_weight * loss_fm
        return StepOutput(loss, {"loss": loss.detach(), "loss_cls": loss_cls.detach(), "loss_fm": loss_fm.detach(),
                                 "mask": mask.mean(), "threshold_mean": thresholds.mean(),
                                 "correction_l1": (y_hat - y_tilde).abs().sum(1).mean()}, (y_tilde, y_hat))
