"""FlexMatch (Zhang et al., NeurIPS 2021, Eq. 6-11): FixMatch with a threshold per class that follows
how far the model has learned each class (curriculum pseudo-labelling).

    sigma_t(c) = sum_n 1(max p_n >= tau) 1(argmax p_n = c)     learning status: unlabeled images whose
                                                               latest confident prediction is class c (Eq. 6)
    beta_t(c)  = sigma_t(c) / max(max_c' sigma_t(c'), N - sum_c' sigma_t(c'))   warm-up (Eq. 11)
               = sigma_t(c) / max_c' sigma_t(c')                                 flexmatch_warmup=false (Eq. 7)
    T_t(c)     = M(beta_t(c)) tau,  M(x) = x / (2 - x)          the convex mapping (Eq. 8-9)
    loss = CE(f(x_lb), y_lb) + w(t) * flexmatch_weight * (1/B_u) sum_b 1(max q_b >= T_t(q^_b)) CE(f(A(u_b)), q^_b)

N is the size of the unlabeled pool; with the warm-up, the unused images count as a class of their own
until most images have been predicted confidently, so the thresholds rise slowly from 0. The status is
one entry per unlabeled image (`selected`, -1 = never confident): the step writes this batch's
confident predictions into it after its mask is taken (the authors' order, USB `FlexMatchThresholdingHook`),
and it travels through checkpoints. It needs the images' positions in the pool (`Batch.idx_ulb`), which
the resident data source gives; under torchrun every process writes the whole global batch's confident
predictions (`ctx.gather`), so each holds the status one process would.
Defaults tau = 0.95, lambda_u = 1, warm-up on (the paper and USB's configs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..batch import Batch
from ..config import Config
from ..errors import UserError
from .base import Algorithm, StepContext, StepOutput, register
from .common import check, joint_forward, masked_ce


@register("flexmatch")
class FlexMatch(Algorithm):
    views = ("weak", "strong")
    keys = ("flexmatch_threshold", "flexmatch_weight", "flexmatch_warmup")

    def __init__(self, flexmatch_threshold: float = 0.95, flexmatch_weight: float = 1.0,
                 flexmatch_warmup: bool = True) -> None:
        self.flexmatch_threshold, self.flexmatch_weight = flexmatch_threshold, flexmatch_weight
        self.flexmatch_warmup = flexmatch_warmup
        self.selected: Tensor | None = None          # (N,) int64: class of each image's latest confident prediction, -1 none

    @classmethod
    def from_config(cls, cfg: Config) -> FlexMatch:
        check_flexmatch(cfg)
        return cls(cfg.flexmatch_threshold, cfg.flexmatch_weight, cfg.flexmatch_warmup)

    def learning_effect(self, num_classes: int) -> Tensor:
        """beta_t(c) (C,) from the status so far (Eq. 7, or Eq. 11 with the warm-up); 0 before any confident prediction."""
        sigma = torch.bincount(self.selected[self.selected >= 0], minlength=num_classes).float()   # (C,)
        denominator = sigma.max()
        if self.flexmatch_warmup:
            denominator = torch.maximum(denominator, len(self.selected) - sigma.sum())
        return sigma / denominator.clamp_min(1)

    def class_thresholds(self, num_classes: int) -> Tensor:
        """T_t(c) = M(beta_t(c)) tau with the convex M(x) = x / (2 - x), (C,)."""
        beta = self.learning_effect(num_classes)
        return self.flexmatch_threshold * beta / (2 - beta)

    def curriculum_mask(self, probs: Tensor, batch: Batch, ctx: StepContext) -> tuple[Tensor, Tensor]:
        """The mask (B_u,) of rows whose confidence clears their class's threshold, and the thresholds (C,)
        it used (from the status before this batch); then this batch's confident predictions enter the status."""
        if batch.idx_ulb is None or ctx.num_unlabeled <= 0:
            raise UserError("flexmatch keeps a learning status per unlabeled image and needs their positions in the "
                            "pool (Batch.idx_ulb); the streamed image-folder source does not give them")
        conf, y_pseudo = probs.max(dim=1)                                # (B_u,), (B_u,)
        if self.selected is None or len(self.selected) != ctx.num_unlabeled:
            self.selected = torch.full((ctx.num_unlabeled,), -1, dtype=torch.long, device=probs.device)
        self.selected = self.selected.to(probs.device)
        thresholds = self.class_thresholds(ctx.num_classes)              # (C,)
        mask = (conf >= thresholds[y_pseudo]).float()                    # (B_u,)
        conf, y_pseudo, idx = (ctx.gather(t) for t in (conf, y_pseudo, batch.idx_ulb.to(probs.device)))  # global batch
        confident = conf >= self.flexmatch_threshold                     # the status counts fixed-tau predictions
        self.selected[idx[confident]] = y_pseudo[confident]
        return mask, thresholds

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepOutput:
        logits_x_lb, logits_x_ulb_w, logits_x_ulb_s = joint_forward(model, batch)   # one forward, (B, C) each
        q = F.softmax(logits_x_ulb_w.detach(), dim=1)                    # (B_u, C), no gradient
        mask, thresholds = self.curriculum_mask(q, batch, ctx)           # (B_u,), (C,)
        loss_cls = F.cross_entropy(logits_x_lb, batch.y_lb)
        loss_fm = masked_ce(logits_x_ulb_s, q.argmax(1), mask)
        loss = loss_cls + ctx.consistency_weight * self.flexmatch_weight * loss_fm
        return StepOutput(loss, {"loss": loss.detach(), "loss_cls": loss_cls.detach(), "loss_fm": loss_fm.detach(),
                                 "mask": mask.mean(), "threshold_mean": thresholds.mean()}, (q, q))

    def state_dict(self) -> dict:
        return {"selected": self.selected.cpu()} if self.selected is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if "selected" in state:
            self.selected = state["selected"].clone()


def check_flexmatch(cfg: Config) -> None:
    check("flexmatch_threshold", cfg.flexmatch_threshold, 0 <= cfg.flexmatch_threshold <= 1, "a number in [0, 1]")
    check("flexmatch_weight", cfg.flexmatch_weight, cfg.flexmatch_weight >= 0, "a number >= 0")
