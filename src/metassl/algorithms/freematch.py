"""FreeMatch (Wang et al., ICLR 2023, Eq. 5-12): FixMatch with a self-adaptive threshold, global and per
class, from EMAs of the model's confidence, plus a self-adaptive fairness term.

    tau_t    = m tau_{t-1}  + (1 - m) (1/B_u) sum_b max q_b          global threshold (Eq. 5); tau_0 = 1/C
    p~_t     = m p~_{t-1}   + (1 - m) (1/B_u) sum_b q_b              local class expectations (Eq. 6), (C,)
    h_t      = m h_{t-1}    + (1 - m) hist(argmax q_b) / B_u         histogram of pseudo-labels (Eq. 11), (C,)
    tau_t(c) = (p~_t(c) / max_c' p~_t(c')) tau_t                     self-adaptive class threshold (Eq. 7)
    loss_u   = (1/B_u) sum_b 1(max q_b >= tau_t(q^_b)) CE(f(A(u_b)), q^_b)                       (Eq. 8)
    loss_f   = -H( SumNorm(p~_t / h_t), SumNorm(p-_s / h-_s) )       fairness (Eq. 12): p-_s, h-_s are the
               mean softmax and the histogram of the strong views that pass the mask; H(a, b) = -sum a log b
    loss = CE(f(x_lb), y_lb) + w(t) * (freematch_weight * loss_u + freematch_fairness_weight * loss_f)

The EMAs are updated with this batch before its mask is taken (the authors' order, USB
`FreeMatchThresholingHook`), with m = freematch_ema, start at 1/C and travel through checkpoints;
loss_f is 0 when no row passes. The target side of loss_f is detached. Under torchrun the EMAs step with
the global batch (`ctx.gather`) and loss_f's sums run over it (`ctx.total`), so N processes compute what
one process with the whole batch does. Defaults m = 0.999, w_u = 1,
w_f = 0.001 (USB's configs for every CIFAR-10/100, SVHN and STL-10 setting; its code default is 0.01).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..batch import Batch
from ..config import Config
from .base import Algorithm, StepContext, StepOutput, register
from .common import check, joint_forward, masked_ce


def fairness_loss(mask: Tensor, logits_x_ulb_s: Tensor, p_model: Tensor, label_hist: Tensor,
                  total: Callable[[Tensor], Tensor] = lambda t: t) -> Tensor:
    """-H(SumNorm(p~ / h), SumNorm(p-_s / h-_s)) over the rows with mask 1 (Eq. 12), (); 0 if none. `total`
    turns this batch's sums into the global batch's (torchrun)."""
    probs_s = F.softmax(logits_x_ulb_s, dim=1)                                       # (B_u, C)
    c = probs_s.shape[1]
    hist_s = torch.bincount(probs_s.argmax(1), weights=mask, minlength=c).float()
    sums = total(torch.cat([hist_s, (probs_s * mask[:, None]).sum(0), mask.sum()[None]]))   # (2C + 1,)
    hist_s, probs_sum, kept = sums[:c], sums[c:2 * c], sums[2 * c]
    hist_s = hist_s / hist_s.sum().clamp_min(1)                                      # (C,) over the kept rows
    target = p_model / label_hist
    target = target / target.sum()                                                   # (C,), no gradient
    scale = torch.where(hist_s > 0, 1 / hist_s.clamp_min(1e-12), torch.zeros_like(hist_s))
    mean_s = probs_sum / kept.clamp_min(1) * scale
    mean_s = mean_s / mean_s.sum().clamp_min(1e-12)                                  # (C,)
    loss = (target * torch.log(mean_s + 1e-12)).sum()
    return torch.where(kept > 0, loss, torch.zeros_like(loss))


@register("freematch")
class FreeMatch(Algorithm):
    views = ("weak", "strong")
    keys = ("freematch_weight", "freematch_fairness_weight", "freematch_ema")

    def __init__(self, freematch_weight: float = 1.0, freematch_fairness_weight: float = 0.001,
                 freematch_ema: float = 0.999) -> None:
        self.freematch_weight, self.freematch_fairness_weight = freematch_weight, freematch_fairness_weight
        self.freematch_ema = freematch_ema
        self.time_p: Tensor | None = None            # () tau_t, the global threshold
        self.p_model: Tensor | None = None           # (C,) p~_t, EMA of the mean softmax
        self.label_hist: Tensor | None = None        # (C,) h_t, EMA of the pseudo-label histogram

    @classmethod
    def from_config(cls, cfg: Config) -> FreeMatch:
        check("freematch_weight", cfg.freematch_weight, cfg.freematch_weight >= 0, "a number >= 0")
        check("freematch_fairness_weight", cfg.freematch_fairness_weight, cfg.freematch_fairness_weight >= 0,
              "a number >= 0")
        check("freematch_ema", cfg.freematch_ema, 0 <= cfg.freematch_ema < 1, "a number in [0, 1)")
        return cls(cfg.freematch_weight, cfg.freematch_fairness_weight, cfg.freematch_ema)

    @torch.no_grad()
    def update(self, q: Tensor) -> None:
        """One EMA step of tau_t, p~_t and h_t with the global batch's weak-view softmax q (B_u, C) (Eq. 5, 6, 11)."""
        c, m = q.shape[1], self.freematch_ema
        if self.p_model is None:
            self.p_model = torch.full((c,), 1 / c, device=q.device)
            self.label_hist, self.time_p = self.p_model.clone(), torch.tensor(1 / c, device=q.device)
        self.p_model, self.label_hist, self.time_p = (t.to(q.device) for t in (self.p_model, self.label_hist, self.time_p))
        conf, pred = q.max(dim=1)
        self.time_p = m * self.time_p + (1 - m) * conf.mean()
        self.p_model = m * self.p_model + (1 - m) * q.mean(0)
        hist = torch.bincount(pred, minlength=c).float()
        self.label_hist = m * self.label_hist + (1 - m) * hist / hist.sum()

    def class_thresholds(self) -> Tensor:
        """tau_t(c) = tau_t p~_t(c) / max p~_t, (C,) (Eq. 7)."""
        return self.time_p * self.p_model / self.p_model.max()

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepOutput:
        logits_x_lb, logits_x_ulb_w, logits_x_ulb_s = joint_forward(model, batch)   # one forward, (B, C) each
        q = F.softmax(logits_x_ulb_w.detach(), dim=1)                    # (B_u, C), no gradient
        self.update(ctx.gather(q))                                       # the global batch's q
        thresholds = self.class_thresholds()                             # (C,)
        conf, y_pseudo = q.max(dim=1)
        mask = (conf >= thresholds[y_pseudo]).float()                    # (B_u,)
        loss_cls = F.cross_entropy(logits_x_lb, batch.y_lb)
        loss_fm = masked_ce(logits_x_ulb_s, y_pseudo, mask)
        loss_fair = fairness_loss(mask, logits_x_ulb_s, self.p_model, self.label_hist, ctx.total)
        loss = loss_cls + ctx.consistency_weight * (self.freematch_weight * loss_fm
                                                    + self.freematch_fairness_weight * loss_fair)
        return StepOutput(loss, {"loss": loss.detach(), "loss_cls": loss_cls.detach(), "loss_fm": loss_fm.detach(),
                                 "loss_fair": loss_fair.detach(), "mask": mask.mean(), "tau": self.time_p.clone()},
                          (q, q))

    def state_dict(self) -> dict:
        if self.p_model is None:
            return {}
        return {"time_p": self.time_p.cpu(), "p_model": self.p_model.cpu(), "label_hist": self.label_hist.cpu()}

    def load_state_dict(self, state: dict) -> None:
        if "p_model" in state:
            self.time_p, self.p_model, self.label_hist = (state[k].clone() for k in ("time_p", "p_model", "label_hist"))
