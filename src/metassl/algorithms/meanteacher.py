"""Mean Teacher (Tarvainen & Valpola, NeurIPS 2017): the target comes from an EMA of the student.

    loss = CE(f(x_lb), y_lb) + w(t) * meanteacher_weight * (1/C) || softmax f(x_u') - softmax f_ema(x_u'') ||^2
    theta_ema <- d * theta_ema + (1 - d) * theta      after each optimiser step (their Eq. 1)

d = 0.99 during the consistency ramp-up and meanteacher_ema (0.999) after it, as in the authors'
release. The teacher is this algorithm's own copy of the model (saved in checkpoints through
state_dict), run in train mode (its own dropout and batch statistics) without gradient; its BN running
statistics are the student's, copied at each update. The gradient of
the consistency loss reaches the student through softmax f(x_u'): tests check it is non-zero (a
well-known toolkit once took the loss from the no-grad teacher pass only, so it had none). The step itself
is the Pi-model's (pimodel.py) with this target.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Config
from ..batch import Batch
from ..torch_utils import ema_update
from .base import StepContext, StepOutput, register
from .common import check, frozen_bn_stats
from .pimodel import PiModel


@register("meanteacher")
class MeanTeacher(PiModel):
    keys = ("meanteacher_weight", "meanteacher_ema")

    def __init__(self, meanteacher_weight: float = 100.0, meanteacher_ema: float = 0.999,
                 rampup: int = 0) -> None:
        self.weight, self.meanteacher_ema, self.rampup = meanteacher_weight, meanteacher_ema, rampup
        self.teacher: nn.Module | None = None
        self.iteration = 0
        self._pending: dict | None = None   # teacher weights from a checkpoint, loaded when the teacher exists

    @classmethod
    def from_config(cls, cfg: Config) -> MeanTeacher:
        check("meanteacher_weight", cfg.meanteacher_weight, cfg.meanteacher_weight >= 0, "a number >= 0")
        check("meanteacher_ema", cfg.meanteacher_ema, 0 <= cfg.meanteacher_ema < 1, "a number in [0, 1)")
        return cls(cfg.meanteacher_weight, cfg.meanteacher_ema, cfg.consistency_rampup)

    def _teacher(self, model: nn.Module) -> nn.Module:
        if self.teacher is None:
            self.teacher = copy.deepcopy(model).requires_grad_(False)
            if self._pending is not None:
                self.teacher.load_state_dict(self._pending)
                self._pending = None
        return self.teacher

    def target(self, model: nn.Module, x: Tensor) -> Tensor:
        """The consistency target (B_u, C): the EMA teacher's softmax on the second view, no gradient."""
        teacher = self._teacher(model).train(model.training)
        with torch.no_grad(), frozen_bn_stats(teacher):
            return F.softmax(teacher(x).float(), dim=1)

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepOutput:
        self.iteration = ctx.iteration                                   # for the EMA decay's ramp
        return super().step(model, batch, ctx)                          # the Pi-model's step with this target

    def decay(self) -> float:
        return min(0.99, self.meanteacher_ema) if self.iteration < self.rampup else self.meanteacher_ema

    def after_update(self, model: nn.Module) -> None:
        ema_update(self._teacher(model), model, self.decay())

    def state_dict(self) -> dict:
        return {"teacher": self.teacher.state_dict()} if self.teacher is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if "teacher" in state:
            if self.teacher is None:
                self._pending = state["teacher"]
            else:
                self.teacher.load_state_dict(state["teacher"])
