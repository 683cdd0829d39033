"""Pi-model (Laine & Aila, ICLR 2017, Sec. 2.1): two stochastic passes over each unlabeled image agree.

    loss = CE(f(x_lb), y_lb) + w(t) * pimodel_weight * (1/C) || softmax f(x_u') - sg[softmax f(x_u'')] ||^2

x_u', x_u'' are two independent weak views (translate + flip) and the passes differ in dropout too.
Choice: the target branch is detached (sg), as in the common modern implementations (google-research
fixmatch `pi_model.py`, USB); Laine & Aila back-propagate through both branches. With the detached target,
this file differs from meanteacher.py only in who produces the target: the student itself here (Mean
Teacher subclasses it and overrides `target`).
w(t) is the shared ramp (consistency_weight, consistency_rampup); pimodel_weight = their w_max = 100
(their M/N factor cancels their labeled loss being averaged over the whole mixed batch, see docs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Config
from ..batch import Batch
from .base import Algorithm, StepContext, StepOutput, register
from .common import check, softmax_mse


@register("pimodel")
class PiModel(Algorithm):
    views = ("weak", "weak")
    keys = ("pimodel_weight",)

    def __init__(self, pimodel_weight: float = 100.0) -> None:
        self.weight = pimodel_weight          # the consistency weight's maximum, w_max

    @classmethod
    def from_config(cls, cfg: Config) -> PiModel:
        check("pimodel_weight", cfg.pimodel_weight, cfg.pimodel_weight >= 0, "a number >= 0")
        return cls(cfg.pimodel_weight)

    def target(self, model: nn.Module, x: Tensor) -> Tensor:
        """The consistency target (B_u, C): the student's own softmax on the second view, no gradient."""
        with torch.no_grad():
            return F.softmax(model(x).float(), dim=1)

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepOutput:
        (x_ulb_1, x_ulb_2) = batch.x_ulb
        logits_x_lb = model(batch.x_lb).float()                          # (B_l, C)
        logits_x_ulb_1 = model(x_ulb_1).float()                          # (B_u, C), carries the gradient
        p_target = self.target(model, x_ulb_2)                           # (B_u, C)
        loss_cls = F.cross_entropy(logits_x_lb, batch.y_lb)
        loss_cons = softmax_mse(logits_x_ulb_1, p_target)
        loss = loss_cls + ctx.consistency_weight * self.weight * loss_cons
        return StepOutput(loss, {"loss": loss.detach(), "loss_cls": loss_cls.detach(), "loss_cons": loss_cons.detach()},
                          (p_target, p_target))
