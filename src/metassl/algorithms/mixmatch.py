"""MixMatch (Berthelot et al., NeurIPS 2019, Algorithm 1).

    q_b  = Sharpen( (1/K) sum_k softmax f(u_b,k), T )          label guessing over K weak views (Eq. 6-7)
    W    = Shuffle( Concat(X^, U^) ),  X^ = (x_lb, onehot y),  U^ = (u_b,k, q_b) for every k
    X'_i = MixUp(X^_i, W_i),  U'_i = MixUp(U^_i, W_{|X^|+i}),  lam ~ Beta(alpha, alpha), lam = max(lam, 1-lam)
    loss = H(p_X', f(X')) + w(t) * mixmatch_weight * (1/C) ||p_U' - softmax f(U')||^2          (Eq. 2-5)

Defaults: K=2, T=0.5, alpha=0.75, lambda_u=75 (the paper's CIFAR-10 values; its lambda_u ramps linearly
over the first 16k of 1M steps, here it follows the shared ramp w(t)). lam is drawn per sample, as in the
authors' code. Label guessing runs in train mode without gradient and without touching BN statistics;
all mixed inputs then go through one forward pass (one device, so no interleaving is needed).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Config
from ..batch import Batch
from .base import Algorithm, StepContext, StepOutput, register
from .common import check, frozen_bn_stats, sharpen, softmax_mse


def guess_labels(probs: list[Tensor], temperature: float) -> Tensor:
    """Eq. 6-7: average the K predictions (each (B_u, C)) and sharpen: (B_u, C)."""
    return sharpen(torch.stack(probs).mean(0), temperature)


@register("mixmatch")
class MixMatch(Algorithm):
    views = ("weak", "weak")   # K = mixmatch_k weak views; the default K=2 here, an instance sets its own
    keys = ("mixmatch_k", "mixmatch_t", "mixmatch_alpha", "mixmatch_weight")

    def __init__(self, mixmatch_k: int = 2, mixmatch_t: float = 0.5, mixmatch_alpha: float = 0.75,
                 mixmatch_weight: float = 75.0) -> None:
        self.views = ("weak",) * mixmatch_k
        self.mixmatch_t, self.mixmatch_alpha, self.mixmatch_weight = mixmatch_t, mixmatch_alpha, mixmatch_weight

    @classmethod
    def from_config(cls, cfg: Config) -> MixMatch:
        check("mixmatch_k", cfg.mixmatch_k, cfg.mixmatch_k >= 1, "an integer >= 1")
        check("mixmatch_t", cfg.mixmatch_t, cfg.mixmatch_t > 0, "a number > 0")
        check("mixmatch_alpha", cfg.mixmatch_alpha, cfg.mixmatch_alpha > 0, "a number > 0")
        check("mixmatch_weight", cfg.mixmatch_weight, cfg.mixmatch_weight >= 0, "a number >= 0")
        return cls(cfg.mixmatch_k, cfg.mixmatch_t, cfg.mixmatch_alpha, cfg.mixmatch_weight)

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepOutput:
        x_lb, y_lb, x_ulb = batch.x_lb, batch.y_lb, batch.x_ulb           # x_ulb: K tensors (B_u, ...)
        with torch.no_grad(), frozen_bn_stats(model):
            q = guess_labels([F.softmax(model(u).float(), dim=1) for u in x_ulb], self.mixmatch_t)  # (B_u, C)
        x_all = torch.cat([x_lb, *x_ulb])                                # (B_l + K B_u, ...)
        p_all = torch.cat([F.one_hot(y_lb, ctx.num_classes).float(), q.repeat(len(x_ulb), 1)])   # (N, C)
        n = len(x_all)
        lam = torch.distributions.Beta(self.mixmatch_alpha, self.mixmatch_alpha).sample((n, 1)).to(x_lb.device)
        lam = torch.maximum(lam, 1 - lam)                                 # (N, 1), Eq. 9: X' stays closer to X
        perm = torch.randperm(n, device=x_lb.device)                      # W = Shuffle(Concat(X^, U^))
        lam_x = lam.view(-1, *[1] * (x_all.dim() - 1))                    # (N, 1, 1, 1)
        x_mix = lam_x * x_all + (1 - lam_x) * x_all[perm]
        p_mix = lam * p_all + (1 - lam) * p_all[perm]                     # (N, C)
        logits = model(x_mix).float()                                     # (N, C), one pass, BN stats once
        b = len(x_lb)
        loss_x = -(p_mix[:b] * F.log_softmax(logits[:b], dim=1)).sum(1).mean()   # Eq. 4
        loss_u = softmax_mse(logits[b:], p_mix[b:])                               # Eq. 5
        loss = loss_x + ctx.consistency_weight * self.mixmatch_weight * loss_u
        return StepOutput(loss, {"loss": loss.detach(), "loss_cls": loss_x.detach(), "loss_cons": loss_u.detach()},
                          (q, q))   # diagnostics: the sharpened guess
