"""MetaFixMatch: the paper's first future direction, meta-gradient pseudo-labels inside FixMatch.

Exactly FixMatch (fixmatch.py) except where the hard target comes from:

    y~   = softmax f(alpha(u); theta_t)          the weak-view distribution of FixMatch's own pass, detached
    g_y  = meta_gradient(f, x_lb, y_lb, alpha(u), y~)      Eq. 13-16 of Zhang et al. on the WEAK view:
           how the labeled loss after one virtual SGD step on Phi(f(alpha(u)), y~) changes with y~
           (eval-mode meta pass, meta_method / meta_phi / eps_scale as for `meta`)
    y^   = proj(y~ - beta_t * g_y)                Eq. 6, `projection` (authors: ReLU + renormalise)
    m_b  = 1(max y^_b >= fixmatch_threshold),  q^_b = argmax y^_b
    loss = CE(f(x_lb), y_lb) + w(t) * fixmatch_weight * (1/B_u) sum_b m_b CE(f(A(u_b)), q^_b)

So the correction can flip the hard label, push a row over or under the threshold, or (a row that
the ReLU projection zeroes) drop it. Where it enters (issue 13; defaults as above):
    meta_target=soft          the strong view's CE is to y^ itself, -sum_c y^_bc log softmax f(A(u_b))_c,
                              so a correction that moves probability without flipping the argmax still counts
    meta_threshold_on=plain   m_b from y~ (FixMatch's own mask): the correction relabels the rows FixMatch keeps
                              and cannot add or drop a row
    meta_step, meta_holdout   the step's length and g_l's images, as for `meta` (meta_gradient.py) With beta_t = 0 the step is FixMatch's, draw for draw (tested).
The meta-gradient is derived for a soft consistency loss Phi on the weak view (MSE by default;
meta_phi=kl is the closer match to FixMatch's cross-entropy); FixMatch's loss is then applied to the
strong view, so the correction is a heuristic transfer of Eq. 13, not its exact meta-gradient.
Cost: one labeled forward + backward and two weak-view forwards on top of FixMatch's step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..batch import Batch
from ..config import Config
from .base import StepContext, StepOutput, register
from .common import check, hard_pseudo_labels, joint_forward, masked_ce
from .fixmatch import FixMatch, check_fixmatch
from .meta_gradient import correct_pseudo_labels, meta_gradient, meta_labeled


@register("metafixmatch")
class MetaFixMatch(FixMatch):
    meta_batch = True

    def __init__(self, fixmatch_threshold: float = 0.95, fixmatch_weight: float = 1.0, *, eps_scale: float,
                 meta_method: str = "fd", meta_phi: str = "mse", projection: str = "relu", meta_step: str = "lr",
                 meta_target: str = "hard", meta_threshold_on: str = "corrected") -> None:
        super().__init__(fixmatch_threshold, fixmatch_weight)
        self.meta_method, self.meta_phi, self.eps_scale, self.projection = meta_method, meta_phi, eps_scale, projection
        self.meta_step, self.meta_target, self.meta_threshold_on = meta_step, meta_target, meta_threshold_on
        check("meta_target", meta_target, meta_target in ("hard", "soft"), "hard, soft")
        check("meta_threshold_on", meta_threshold_on, meta_threshold_on in ("corrected", "plain"), "corrected, plain")

    @classmethod
    def from_config(cls, cfg: Config) -> MetaFixMatch:
        check_fixmatch(cfg)
        return cls(cfg.fixmatch_threshold, cfg.fixmatch_weight, eps_scale=cfg.eps_scale, meta_method=cfg.meta_method,
                   meta_phi=cfg.meta_phi, projection=cfg.projection, meta_step=cfg.meta_step,
                   meta_target=cfg.meta_target, meta_threshold_on=cfg.meta_threshold_on)

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepOutput:
        x_lb, (x_ulb_w, x_ulb_s) = batch.x_lb, batch.x_ulb
        logits_x_lb, logits_x_ulb_w, logits_x_ulb_s = joint_forward(model, batch)   # one forward, (B, C) each
        y_tilde = F.softmax(logits_x_ulb_w.detach(), dim=1)              # (B_u, C), FixMatch's q, no gradient
        grad_y = meta_gradient(model, *meta_labeled(batch), x_ulb_w, y_tilde, method=self.meta_method,
                               phi=self.meta_phi, eps_scale=self.eps_scale, alpha=ctx.lr,
                               reduce=ctx.reduce_grad)  # (B_u, C), Eq. 13-16; global g_l under torchrun
        y_hat = correct_pseudo_labels(y_tilde, grad_y, ctx.beta, self.projection, self.meta_step)  # (B_u, C), Eq. 6
        y_pseudo, mask = hard_pseudo_labels(y_hat, self.fixmatch_threshold)              # (B_u,), (B_u,)
        if self.meta_threshold_on == "plain":
            mask = hard_pseudo_labels(y_tilde, self.fixmatch_threshold)[1]               # FixMatch's own rows
        loss_cls = F.cross_entropy(logits_x_lb, batch.y_lb)
        if self.meta_target == "soft":                                                   # CE to y^ itself
            loss_fm = (-(y_hat * F.log_softmax(logits_x_ulb_s, dim=1)).sum(1) * mask).mean()
        else:
            loss_fm = masked_ce(logits_x_ulb_s, y_pseudo, mask)
        loss = loss_cls + ctx.consistency_weight * self.fixmatch_weight * loss_fm
        return StepOutput(loss, {"loss": loss.detach(), "loss_cls": loss_cls.detach(), "loss_fm": loss_fm.detach(),
                                 "mask": mask.mean(), "correction_l1": (y_hat - y_tilde).abs().sum(1).mean()},
                          (y_tilde, y_hat))
