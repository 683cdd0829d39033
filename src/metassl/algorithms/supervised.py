"""Labeled data only: cross-entropy on the labeled batch (the lower reference; with num_labels=-1,
every training label, the fully-supervised upper reference)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..batch import Batch
from .base import Algorithm, StepContext, StepOutput, register


@register("supervised")
class Supervised(Algorithm):
    views: tuple[str, ...] = ()
    uses_unlabeled = False

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepOutput:
        loss = F.cross_entropy(model(batch.x_lb).float(), batch.y_lb)
        return StepOutput(loss, {"loss": loss.detach(), "loss_cls": loss.detach()})
