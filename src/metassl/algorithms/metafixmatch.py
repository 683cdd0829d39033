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
the ReLU projection zeroes) drop it. Where it enters (defaults as above):
    meta_target=soft          the strong view's CE is to y^ itself, -sum_c y^_bc log softmax f(A(u_b))_c,
                              so a correction that moves probability without flipping the argmax still counts
    meta_threshold_on=plain   m_b from y~ (FixMatch's own mask): the correction relabels the rows FixMatch keeps
                              and cannot add or drop a row
    meta_step, meta_holdout   the step's length and g_l's images, as for `meta` (meta_gradient.py)
With beta_t = 0 the step is FixMatch's, draw for draw (tested).
The meta-gradient is derived for a soft consistency loss Phi on the weak view (MSE by default;
meta_phi=kl is the closer match to FixMatch's cross-entropy); FixMatch's loss is then applied to the
strong view, so the correction is a heuristic transfer of Eq. 13, not its exact meta-gradient.
Cost: one labeled forward + backward and two weak-view forwards on top of FixMatch's step.
`MetaTarget` is the correction with its options; metaflexmatch.py puts the same one inside FlexMatch.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch.nn.functional as F
from torch import Tensor, nn

from ..batch import Batch
from ..config import Config
from .base import StepContext, StepOutput, register
from .common import check, hard_pseudo_labels, joint_forward, masked_ce
from .fixmatch import FixMatch, check_fixmatch
from .meta_gradient import CONFIG_KEYS, correct_pseudo_labels, meta_gradient, meta_labeled


@dataclass(frozen=True)
class MetaTarget:
    """The meta-gradient correction of a thresholded weak-view target (its fields are the Config keys)."""

    eps_scale: float
    meta_method: str = "fd"
    meta_phi: str = "mse"
    projection: str = "relu"
    meta_step: str = "lr"
    meta_target: str = "hard"
    meta_threshold_on: str = "corrected"

    def __post_init__(self) -> None:
        check("meta_target", self.meta_target, self.meta_target in ("hard", "soft"), "hard, soft")
        check("meta_threshold_on", self.meta_threshold_on, self.meta_threshold_on in ("corrected", "plain"),
              "corrected, plain")

    @classmethod
    def options(cls, cfg: Config) -> dict[str, str | float]:
        """Its fields' values in `cfg`, as keyword arguments of an algorithm that holds one."""
        return {f.name: getattr(cfg, f.name) for f in fields(cls)}

    def correct(self, model: nn.Module, batch: Batch, y_tilde: Tensor, ctx: StepContext) -> Tensor:
        """y^ (B_u, C) from the weak-view y~ (B_u, C): Eq. 13-16 (global g_l under torchrun), then Eq. 6."""
        grad_y = meta_gradient(model, *meta_labeled(batch), batch.x_ulb[0], y_tilde, method=self.meta_method,
                               phi=self.meta_phi, eps_scale=self.eps_scale, alpha=ctx.lr, reduce=ctx.reduce_grad)
        return correct_pseudo_labels(y_tilde, grad_y, ctx.meta_step_size, self.projection, self.meta_step)

    def thresholded(self, y_tilde: Tensor, y_hat: Tensor) -> Tensor:
        """The distribution the confidence mask reads: y^ (corrected) or y~ (plain, the base algorithm's rows)."""
        return y_tilde if self.meta_threshold_on == "plain" else y_hat

    def loss(self, logits_s: Tensor, y_hat: Tensor, mask: Tensor) -> Tensor:
        """The strong view's masked CE: to argmax y^ (hard) or to y^ itself (soft); mean over the whole batch."""
        if self.meta_target == "soft":
            return (-(y_hat * F.log_softmax(logits_s.float(), dim=1)).sum(1) * mask).mean()
        return masked_ce(logits_s, y_hat.argmax(1), mask)


@register("metafixmatch")
class MetaFixMatch(FixMatch):
    keys = FixMatch.keys + CONFIG_KEYS + ("meta_target", "meta_threshold_on")

    def __init__(self, fixmatch_threshold: float = 0.95, fixmatch_weight: float = 1.0, *, eps_scale: float,
                 **meta: str) -> None:
        super().__init__(fixmatch_threshold, fixmatch_weight)
        self.correction = MetaTarget(eps_scale, **meta)

    @classmethod
    def from_config(cls, cfg: Config) -> MetaFixMatch:
        check_fixmatch(cfg)
        return cls(cfg.fixmatch_threshold, cfg.fixmatch_weight, **MetaTarget.options(cfg))

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepOutput:
        logits_x_lb, logits_x_ulb_w, logits_x_ulb_s = joint_forward(model, batch)   # one forward, (B, C) each
        y_tilde = F.softmax(logits_x_ulb_w.detach(), dim=1)              # (B_u, C), FixMatch's q, no gradient
        y_hat = self.correction.correct(model, batch, y_tilde, ctx)            # (B_u, C), Eq. 13-16 then Eq. 6
        _, mask = hard_pseudo_labels(self.correction.thresholded(y_tilde, y_hat), self.fixmatch_threshold)  # (B_u,)
        loss_cls = F.cross_entropy(logits_x_lb, batch.y_lb)
        loss_fm = self.correction.loss(logits_x_ulb_s, y_hat, mask)
        loss = loss_cls + ctx.consistency_weight * self.fixmatch_weight * loss_fm
        return StepOutput(loss, {"loss": loss.detach(), "loss_cls": loss_cls.detach(), "loss_fm": loss_fm.detach(),
                                 "mask": mask.mean(), "correction_l1": (y_hat - y_tilde).abs().sum(1).mean()},
                          (y_tilde, y_hat))
