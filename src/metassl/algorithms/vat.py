"""Virtual Adversarial Training (Miyato et al., TPAMI 2018), with the entropy-minimisation option VAT+Ent.

    r_adv = vat_eps * g / ||g||_2,  g = grad_d KL(p(y|x_u) || p(y|x_u + d)) at d = xi * u / ||u||_2,
            u ~ N(0, I), xi = 1e-6                          (one power iteration, their Eq. 12-13)
    loss  = CE(f(x_lb), y_lb) + w(t) * vat_weight * KL(sg[p(y|x_u)] || p(y|x_u + r_adv))      (Eq. 9)
            [+ w(t) * H(p(y|x_u))  with vat_entmin, VAT+Ent, Sec. 4.1.3]

Norms are per image over all pixels of the normalised input. As the authors' code does
(`update_batch_stats=False`), only the labeled pass updates BN running statistics; the unlabeled passes
use batch statistics. The clean, the power-iteration and the adversarial passes share one dropout mask
(the RNG state is replayed), so g is the gradient of the smoothness term alone and not of dropout noise.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Config
from ..batch import Batch
from .base import Algorithm, StepContext, StepOutput, register
from .common import check, frozen_bn_stats
from .meta_gradient import unlabeled_loss

XI = 1e-6   # finite-difference radius of the power iteration (Miyato et al.: 1e-6)


def l2_normalize(d: Tensor) -> Tensor:
    """Each sample scaled to unit L2 norm over all its elements: (B, ...) -> (B, ...). Divides by the
    max |d| first (as the authors' code), so gradients of order 1e-12 neither underflow nor lose the norm."""
    shape = (-1, *[1] * (d.dim() - 1))
    d = d / d.flatten(1).abs().amax(dim=1).clamp_min(1e-30).view(shape)
    return d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)


def kl_div(p: Tensor, logits_q: Tensor) -> Tensor:
    """KL(p || softmax(logits_q)) summed over classes, averaged over the batch. p: (B, C) probabilities."""
    return unlabeled_loss(logits_q.float(), p, "kl")


def rng_state(device: torch.device) -> Tensor:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng_state(state: Tensor, device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


@contextmanager
def replayed_rng(state: Tensor | None, device: torch.device) -> Iterator[None]:
    """Run a block with the device RNG at `state` (same dropout masks as the pass that started there),
    then put the RNG back where it was, so the rest of the run's random stream is unaffected."""
    if state is None:
        yield
        return
    now = rng_state(device)
    _set_rng_state(state, device)
    try:
        yield
    finally:
        _set_rng_state(now, device)


@register("vat")
class VAT(Algorithm):
    views = ("weak",)
    keys = ("vat_eps", "vat_weight", "vat_entmin")

    def __init__(self, vat_eps: float = 4.0, vat_weight: float = 1.0, vat_entmin: bool = False) -> None:
        self.vat_eps, self.vat_weight, self.vat_entmin = vat_eps, vat_weight, vat_entmin

    @classmethod
    def from_config(cls, cfg: Config) -> VAT:
        check("vat_eps", cfg.vat_eps, cfg.vat_eps > 0, "a number > 0")
        check("vat_weight", cfg.vat_weight, cfg.vat_weight >= 0, "a number >= 0")
        return cls(cfg.vat_eps, cfg.vat_weight, cfg.vat_entmin)

    def perturbation(self, model: nn.Module, x: Tensor, p: Tensor, rng: Tensor | None = None) -> Tensor:
        """r_adv (B, ...) with per-sample L2 norm vat_eps; p (B, C) is the clean prediction (no gradient)."""
        d = (XI * l2_normalize(torch.randn_like(x))).requires_grad_(True)
        with replayed_rng(rng, x.device):
            (g,) = torch.autograd.grad(kl_div(p, model(x + d)), d)
        return self.vat_eps * l2_normalize(g.detach())

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepOutput:
        x_ulb = batch.x_ulb[0]
        logits_x_lb = model(batch.x_lb).float()                          # (B_l, C), updates BN statistics
        with frozen_bn_stats(model):
            rng = rng_state(x_ulb.device)
            with torch.set_grad_enabled(self.vat_entmin):
                logits_x_ulb = model(x_ulb).float()                      # (B_u, C), gradient for H only
            p = F.softmax(logits_x_ulb.detach(), dim=1)                  # (B_u, C)
            r_adv = self.perturbation(model, x_ulb, p, rng)              # (B_u, C_in, H, W)
            with replayed_rng(rng, x_ulb.device):
                logits_adv = model(x_ulb + r_adv).float()                # (B_u, C)
        loss_cls = F.cross_entropy(logits_x_lb, batch.y_lb)
        loss_vat = kl_div(p, logits_adv)
        loss = loss_cls + ctx.consistency_weight * self.vat_weight * loss_vat
        metrics = {"loss_cls": loss_cls.detach(), "loss_vat": loss_vat.detach()}
        if self.vat_entmin:
            loss_ent = -(F.softmax(logits_x_ulb, 1) * F.log_softmax(logits_x_ulb, 1)).sum(1).mean()
            loss = loss + ctx.consistency_weight * loss_ent
            metrics["loss_ent"] = loss_ent.detach()
        return StepOutput(loss, {"loss": loss.detach(), **metrics})
