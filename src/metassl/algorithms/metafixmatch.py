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
the ReLU projection zeroes) drop it. With beta_t = 0 the step is FixMatch's, draw for draw (tested).
The meta-gradient is derived for a soft consistency loss Phi on the weak view (MSE by default;
meta_phi=kl is the closer match to FixMatch's cross-entropy); FixMatch's loss is then applied to the
strong view, so the correction is a heuristic transfer of Eq. 13, not its exact meta-gradient.
Cost: one labeled forward + backward and two weak-view forwards on top of FixMatch's step.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..config import Config
from .base import Batch, StepContext, register
from .fixmatch import FixMatch, check_fixmatch
from .meta_gradient import correct_pseudo_labels, meta_gradient


class MetaFixMatch(FixMatch):
    def __init__(self, fixmatch_threshold: float = 0.95, fixmatch_weight: float = 1.0, *, meta_method: str = "fd",
                 meta_phi: str = "mse", eps_scale: float = 0.01, projection: str = "relu") -> None:
        super().__init__(fixmatch_threshold, fixmatch_weight)
        self.meta_method, self.meta_phi, self.eps_scale, self.projection = meta_method, meta_phi, eps_scale, projection

    def pseudo_labels(self, model: nn.Module, batch: Batch, ctx: StepContext,
                      logits_x_ulb_w: Tensor) -> tuple[Tensor, Tensor]:
        """(y~, y^): FixMatch's weak-view distribution and its meta-corrected version, (B_u, C) each."""
        y_tilde, _ = super().pseudo_labels(model, batch, ctx, logits_x_ulb_w)
        grad_y = meta_gradient(model, batch.x_lb, batch.y_lb, batch.x_ulb[0], y_tilde, method=self.meta_method,
                               phi=self.meta_phi, eps_scale=self.eps_scale, alpha=ctx.lr,
                               reduce=ctx.reduce_grad)  # (B_u, C), Eq. 13-16; global g_l under torchrun
        return y_tilde, correct_pseudo_labels(y_tilde, grad_y, ctx.beta, self.projection)   # Eq. 6

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        loss, metrics = super().step(model, batch, ctx)
        y_tilde, y_hat = self.last_pseudo_labels
        metrics["correction_l1"] = (y_hat - y_tilde).abs().sum(1).mean()
        return loss, metrics


@register("metafixmatch")
def _build(cfg: Config) -> MetaFixMatch:
    check_fixmatch(cfg)
    return MetaFixMatch(cfg.fixmatch_threshold, cfg.fixmatch_weight, meta_method=cfg.meta_method,
                        meta_phi=cfg.meta_phi, eps_scale=cfg.eps_scale, projection=cfg.projection)
