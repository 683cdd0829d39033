"""SoftMatch (Chen et al., ICLR 2023, Eq. 6-10): FixMatch with a soft weight per pseudo-label instead of a
hard threshold, a truncated Gaussian in the confidence, on uniformly aligned probabilities.

    p~_t = m p~_{t-1} + (1 - m) (1/B_u) sum_b q_b,   q'_b = Normalize(q_b / p~_t)   uniform alignment (Eq. 10)
    mu_t = m mu_{t-1} + (1 - m) mean_b max q'_b                                     (Eq. 7); mu_0 = 1/C
    s2_t = m s2_{t-1} + (1 - m) var_b max q'_b  (unbiased, B_u / (B_u - 1))          (Eq. 7); s2_0 = 1
    l_b  = exp(-(max q'_b - mu_t)^2 / (2 s2_t / n^2))  if max q'_b < mu_t,  else 1   (Eq. 6; n = softmatch_n_sigma)
    loss = CE(f(x_lb), y_lb) + w(t) * softmatch_weight * (1/B_u) sum_b l_b CE(f(A(u_b)), argmax q_b)

The EMAs are updated with this batch before its weights are taken (the authors' order, USB
`SoftMatchWeightingHook`, `DistAlignEMAHook` with a uniform target; p~ starts at the first batch's mean)
and travel through checkpoints; under torchrun they step with the global batch (`ctx.gather`). The weights
use the aligned q', the hard labels the raw q (as USB does).
n scales the Gaussian's width to sigma_t / n (USB's n_sigma = 2; the paper's lambda_max = 1 is the
weight above the mean). Defaults m = 0.999, n = 2, lambda_u = 1, alignment on.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..batch import Batch
from ..config import Config
from .base import Algorithm, StepContext, StepOutput, register
from .common import check, joint_forward, masked_ce


@register("softmatch")
class SoftMatch(Algorithm):
    views = ("weak", "strong")
    keys = ("softmatch_weight", "softmatch_ema", "softmatch_n_sigma", "softmatch_align")

    def __init__(self, softmatch_weight: float = 1.0, softmatch_ema: float = 0.999, softmatch_n_sigma: float = 2.0,
                 softmatch_align: bool = True) -> None:
        self.softmatch_weight, self.softmatch_ema = softmatch_weight, softmatch_ema
        self.softmatch_n_sigma, self.softmatch_align = softmatch_n_sigma, softmatch_align
        self.p_model: Tensor | None = None           # (C,) p~_t, EMA of the mean weak-view softmax
        self.mu: Tensor | None = None                # () mu_t, EMA of the mean confidence
        self.var: Tensor | None = None               # () s2_t, EMA of its variance

    @classmethod
    def from_config(cls, cfg: Config) -> SoftMatch:
        check("softmatch_weight", cfg.softmatch_weight, cfg.softmatch_weight >= 0, "a number >= 0")
        check("softmatch_ema", cfg.softmatch_ema, 0 <= cfg.softmatch_ema < 1, "a number in [0, 1)")
        check("softmatch_n_sigma", cfg.softmatch_n_sigma, cfg.softmatch_n_sigma > 0, "a number > 0")
        return cls(cfg.softmatch_weight, cfg.softmatch_ema, cfg.softmatch_n_sigma, cfg.softmatch_align)

    @torch.no_grad()
    def align(self, q: Tensor, q_all: Tensor) -> tuple[Tensor, Tensor]:
        """Uniform distribution alignment q / p~_t, renormalised, of this batch's q (B_u, C) and the global
        batch's q_all, after one EMA step of p~_t with q_all (Eq. 10)."""
        m = self.softmatch_ema
        mean = q_all.mean(0)                                             # (C,) over the global batch
        self.p_model = mean if self.p_model is None else m * self.p_model.to(q.device) + (1 - m) * mean
        aligned = [p * (1 / p.shape[1] + 1e-6) / (self.p_model + 1e-6) for p in (q, q_all)]
        return tuple(p / p.sum(dim=1, keepdim=True) for p in aligned)

    @torch.no_grad()
    def weights(self, q: Tensor, q_all: Tensor) -> Tensor:
        """lambda(q) (B_u,): one EMA step of mu_t and s2_t with the global batch's q_all, then the truncated
        Gaussian of this batch's confidences (Eq. 6-7)."""
        m, conf, conf_all = self.softmatch_ema, q.max(dim=1).values, q_all.max(dim=1).values
        if self.mu is None:
            self.mu, self.var = torch.tensor(1 / q.shape[1], device=q.device), torch.tensor(1.0, device=q.device)
        self.mu = m * self.mu.to(q.device) + (1 - m) * conf_all.mean()
        self.var = m * self.var.to(q.device) + (1 - m) * conf_all.var(unbiased=True)
        return torch.exp(-(conf - self.mu).clamp(max=0) ** 2 / (2 * self.var / self.softmatch_n_sigma ** 2))

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepOutput:
        logits_x_lb, logits_x_ulb_w, logits_x_ulb_s = joint_forward(model, batch)   # one forward, (B, C) each
        q = F.softmax(logits_x_ulb_w.detach(), dim=1)                    # (B_u, C), no gradient
        q_all = ctx.gather(q)                                            # the global batch's, for the EMAs
        p, p_all = self.align(q, q_all) if self.softmatch_align else (q, q_all)     # q' (Eq. 10), or q
        weight = self.weights(p, p_all)                                  # (B_u,) in (0, 1]
        y_pseudo = q.argmax(dim=1)
        loss_cls = F.cross_entropy(logits_x_lb, batch.y_lb)
        loss_sm = masked_ce(logits_x_ulb_s, y_pseudo, weight)          # mean_b l_b CE_b
        loss = loss_cls + ctx.consistency_weight * self.softmatch_weight * loss_sm
        return StepOutput(loss, {"loss": loss.detach(), "loss_cls": loss_cls.detach(), "loss_sm": loss_sm.detach(),
                                 "mask": weight.mean(), "mu": self.mu.clone()}, (q, q))

    def state_dict(self) -> dict:
        if self.mu is None:
            return {}
        return {"p_model": self.p_model.cpu() if self.p_model is not None else None, "mu": self.mu.cpu(),
                "var": self.var.cpu()}

    def load_state_dict(self, state: dict) -> None:
        if "mu" in state:
            self.p_model = state["p_model"].clone() if state["p_model"] is not None else None
            self.mu, self.var = state["mu"].clone(), state["var"].clone()
