"""Meta Pseudo Labels (Pham et al., CVPR 2021, Sec. 2-3, Appendix A), first order, in the meta family.

A teacher T (a copy of the student at the first MPL step, architecture and weights, with its own SGD in
this object's state, checkpointed through state_dict) labels the strong view; the student S (the trainer's model) learns from those labels only; the
teacher learns from how one student step on them changed the student's labeled loss:

    y^_b  ~ Categorical(softmax T(A(u_b)))                  sampled hard pseudo-labels, no gradient
    loss_S = (1/B_u) sum_b CE(S(A(u_b)), y^_b)              the student's loss: the trainer's step on it
    h     = CE(S(x_l; theta_S), y_l) - CE(S(x_l; theta_S'), y_l),   theta_S' = theta_S - lr_t grad loss_S
            (eval mode): the labeled loss before minus after a virtual plain-SGD student step, to first
            order lr_t * <grad_S CE_l, grad_S loss_S>, the dot product of Appendix A
    loss_T = CE(T(x_l), y_l) + w(t) * mpl_uda_weight * UDA + h * (1/B_u) sum_b CE(T(A(u_b)), y^_b)
    UDA   = (1/B_u) sum_b 1(max q_b >= mpl_uda_threshold) CE(T(A(u_b)), q_b),
            q = softmax(T(alpha(u)) / mpl_uda_temperature), no gradient        (Xie et al. 2020)
    theta_T <- SGD step on loss_T at lr mpl_teacher_lr * lr_t (the trainer's momentum and weight decay)

h > 0 (the student's labeled loss fell) makes the teacher more likely to give the labels it gave, h < 0
less (tested). Kept from the paper's recipe: separate teacher and student, sampled hard labels on the
strong view, the student never fitting the labels during the meta phase, the teacher's supervised + UDA +
MPL loss. Left out: the final fine-tune of the student on the labeled set (the trainer has one phase;
a second `metassl train` from the checkpoint is the fine-tune), label smoothing, the teacher's own EMA,
the UDA ramp's separate length (w(t) serves), and several processes (the teacher's gradient is not
all-reduced: one process only, and build_algorithm refuses torchrun with more).

Why the virtual step inside `step` rather than the teacher update in `after_update` (after the trainer's
real student step): the math stays in the step (no graph held across hooks, a checkpoint never falls
between the two halves), and h is exactly the paper's (one plain-SGD step) rather than the change under
the trainer's momentum and weight decay. The student's real update is still the trainer's. Cost: one
extra student backward and an eval-mode labeled forward, plus the teacher's forward and backward.
The pseudo-labels it reports for the diagnostics are the teacher's eval-mode weak-view predictions
before and after its update.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..batch import Batch
from ..config import Config
from ..torch_utils import eval_mode
from .base import Algorithm, StepContext, StepOutput, register
from .common import check


def labeled_loss_change(model: nn.Module, x_lb: Tensor, y_lb: Tensor, loss_s: Tensor, lr: float) -> Tensor:
    """h = CE_l(theta) - CE_l(theta - lr grad loss_s): how much one virtual SGD step on loss_s lowers the
    labeled loss (eval mode, no side effects; loss_s's graph is kept for the trainer's backward). () tensor."""
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss_s, params, retain_graph=True, allow_unused=True)
    stepped = {k: p.detach() - lr * g for k, p, g in zip(names, params, grads) if g is not None}
    with eval_mode(model), torch.no_grad():
        before = F.cross_entropy(model(x_lb).float(), y_lb)
        after = F.cross_entropy(functional_call(model, stepped, (x_lb,)).float(), y_lb)
    return before - after


@register("mpl")
class MPL(Algorithm):
    views = ("weak", "strong")
    keys = ("mpl_teacher_lr", "mpl_uda_weight", "mpl_uda_threshold", "mpl_uda_temperature")
    distributed = False          # the teacher's gradient and h are this process's own

    def __init__(self, *, teacher_lr: float = 1.0, uda_weight: float = 1.0, uda_threshold: float = 0.8,
                 uda_temperature: float = 0.4, momentum: float = 0.9, weight_decay: float = 1e-4,
                 nesterov: bool = False) -> None:
        self.teacher_lr, self.uda_weight, self.uda_threshold = teacher_lr, uda_weight, uda_threshold
        self.uda_temperature, self.sgd = uda_temperature, dict(momentum=momentum, weight_decay=weight_decay,
                                                                nesterov=nesterov)
        self.teacher: nn.Module | None = None
        self.opt: torch.optim.Optimizer | None = None
        self._loaded: dict | None = None          # a checkpoint's teacher, applied when the teacher is built

    @classmethod
    def from_config(cls, cfg: Config) -> MPL:
        check("mpl_teacher_lr", cfg.mpl_teacher_lr, cfg.mpl_teacher_lr > 0, "a number > 0")
        check("mpl_uda_weight", cfg.mpl_uda_weight, cfg.mpl_uda_weight >= 0, "a number >= 0")
        check("mpl_uda_threshold", cfg.mpl_uda_threshold, 0 <= cfg.mpl_uda_threshold <= 1, "a number in [0, 1]")
        check("mpl_uda_temperature", cfg.mpl_uda_temperature, cfg.mpl_uda_temperature > 0, "a number > 0")
        return cls(teacher_lr=cfg.mpl_teacher_lr, uda_weight=cfg.mpl_uda_weight, uda_threshold=cfg.mpl_uda_threshold,
                   uda_temperature=cfg.mpl_uda_temperature, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                   nesterov=cfg.nesterov)

    def build_teacher(self, model: nn.Module) -> None:
        """The teacher: the student's architecture and initial weights, its own SGD (lr set each step)."""
        self.teacher = copy.deepcopy(model).requires_grad_(True).train()
        self.teacher.zero_grad(set_to_none=True)
        self.opt = torch.optim.SGD(self.teacher.parameters(), lr=0.0, **self.sgd)
        if self._loaded is not None:
            self.teacher.load_state_dict(self._loaded["teacher"])
            self.opt.load_state_dict(self._loaded["teacher_opt"])
            self._loaded = None

    def teacher_probs(self, x: Tensor) -> Tensor:
        with eval_mode(self.teacher), torch.no_grad():
            return F.softmax(self.teacher(x).float(), dim=1)

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepOutput:
        if self.teacher is None:
            self.build_teacher(model)
        x_lb, y_lb, (x_ulb_w, x_ulb_s) = batch.x_lb, batch.y_lb, batch.x_ulb
        b, u = len(x_lb), len(x_ulb_w)
        plain = self.teacher_probs(x_ulb_w)                                      # (B_u, C) diagnostics
        t_logits = self.teacher(torch.cat([x_lb, x_ulb_w, x_ulb_s])).float()     # (B_l + 2 B_u, C)
        t_logits_x_lb, t_logits_x_ulb_w, t_logits_x_ulb_s = t_logits[:b], t_logits[b:b + u], t_logits[b + u:]
        y_pseudo = torch.multinomial(F.softmax(t_logits_x_ulb_s.detach(), dim=1), 1).squeeze(1)   # (B_u,) sampled
        loss_s = F.cross_entropy(model(x_ulb_s).float(), y_pseudo)              # the student: pseudo-labels only
        h = labeled_loss_change(model, x_lb, y_lb, loss_s, ctx.lr)              # () the meta signal
        q = F.softmax(t_logits_x_ulb_w.detach() / self.uda_temperature, dim=1)  # (B_u, C) UDA's sharpened target
        mask = (F.softmax(t_logits_x_ulb_w.detach(), dim=1).max(1).values >= self.uda_threshold).float()
        loss_uda = (-(q * F.log_softmax(t_logits_x_ulb_s, dim=1)).sum(1) * mask).mean()
        loss_t_cls = F.cross_entropy(t_logits_x_lb, y_lb)
        loss_mpl = F.cross_entropy(t_logits_x_ulb_s, y_pseudo)                 # CE(T(A(u)), y^)
        loss_t = loss_t_cls + ctx.consistency_weight * self.uda_weight * loss_uda + h * loss_mpl
        for group in self.opt.param_groups:
            group["lr"] = self.teacher_lr * ctx.lr
        self.opt.zero_grad(set_to_none=True)
        loss_t.backward()
        self.opt.step()
        final = self.teacher_probs(x_ulb_w)
        return StepOutput(loss_s, {"loss": loss_s.detach(), "loss_teacher": loss_t.detach(),
                                   "loss_teacher_cls": loss_t_cls.detach(), "loss_uda": loss_uda.detach(),
                                   "loss_mpl": loss_mpl.detach(), "mpl_h": h.detach(), "mask": mask.mean()},
                          (plain, final))

    def state_dict(self) -> dict:
        if self.teacher is None:
            return dict(self._loaded or {})
        return {"teacher": self.teacher.state_dict(), "teacher_opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self._loaded = state
        if self.teacher is not None:
            self.build_teacher(self.teacher)
