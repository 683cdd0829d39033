"""Meta-gradient SSL (Zhang et al., AISTATS 2021), Alg. 1 and Alg. 2, and the paper's ablation rows.

Two switches give the four rows of the ablation table:
    neither    consistency to the plain predictions y~, labeled CE          (row 1)
    meta       consistency to the meta-corrected y^, labeled CE (Alg. 1)    (row 2)
    mixup      cross-domain mixup with y~, consistency to y~                (row 3)
    metamixup  cross-domain mixup with y^, consistency to y^ (Alg. 2)       (row 4, the method)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..batch import Batch
from ..config import Config
from ..errors import UserError
from ..torch_utils import eval_mode
from .base import Algorithm, StepContext, StepOutput, register
from .meta_gradient import (CONFIG_KEYS, correct_pseudo_labels, fd_pseudo_labels, head_pseudo_labels, meta_gradient,
                            meta_labeled, resolve_method, unlabeled_loss)

META_KEYS = CONFIG_KEYS + ("meta_fused", "meta_batched", "meta_params")   # the rows with the correction read these


class AblationRow(Algorithm):
    """One class for the four rows; the registered subclasses below fix `meta` and `mixup`."""

    meta: bool = True       # consistency (and mixup) targets are the meta-corrected y^, not y~
    mixup: bool = True      # cross-domain mixup of each labeled image with one unlabeled image
    keys = ("consistency", "mixup_gamma", *META_KEYS)

    def __init__(self, *, eps_scale: float, meta_method: str = "fd", meta_phi: str = "mse",
                 projection: str = "relu", consistency: str = "mse",
                 mixup_gamma: float = 1.0, meta_fused: bool = True, meta_batched: bool = False, meta_params: str = "all",
                 meta_step: str = "lr") -> None:
        self.meta_fused, self.meta_batched, self.meta_params, self.meta_step = meta_fused, meta_batched, meta_params, meta_step
        self.meta_method, self.meta_phi, self.eps_scale = meta_method, meta_phi, eps_scale
        self.projection, self.consistency, self.mixup_gamma = projection, consistency, mixup_gamma

    @classmethod
    def from_config(cls, cfg: Config) -> AblationRow:
        # The meta-gradient (Eq. 13) differentiates the very unlabeled loss Phi that training then applies (Eq. 3),
        # so with meta=True the two keys must name the same loss, as in the authors' code (MSE for both).
        if cls.meta and cfg.consistency != cfg.meta_phi:
            raise UserError(f"consistency={cfg.consistency} with meta_phi={cfg.meta_phi} mixes two derivations: the "
                            f"meta-gradient is that of the consistency loss, so set both to mse or both to kl")
        return cls(eps_scale=cfg.eps_scale, meta_method=cfg.meta_method, meta_phi=cfg.meta_phi,
                   projection=cfg.projection, consistency=cfg.consistency, mixup_gamma=cfg.mixup_gamma,
                   meta_fused=cfg.meta_fused, meta_batched=cfg.meta_batched, meta_params=cfg.meta_params,
                   meta_step=cfg.meta_step)

    def pseudo_labels(self, model: nn.Module, batch: Batch, ctx: StepContext) -> tuple[Tensor, Tensor]:
        """(y~, y^): the plain predictions (Eq. 2) and, with `meta`, their correction (Eq. 6)."""
        (x_lb, y_lb), x_ulb = meta_labeled(batch), batch.x_ulb[0]      # g_l's images: held out if there are any
        if self.meta and self.meta_params == "head":
            # g_l and the virtual step on the head only: exact (no eps), two eval-mode body forwards, no backward
            y_tilde, grad_y = head_pseudo_labels(model, x_lb, y_lb, x_ulb, phi=self.meta_phi, reduce=ctx.reduce_grad)
        elif self.meta and resolve_method(model, self.meta_method) == "fd" and self.meta_fused:
            # y~ (Eq. 2) as the mean of the two perturbed forwards (O(eps^2) from the plain forward): one pass fewer
            y_tilde, grad_y = fd_pseudo_labels(model, x_lb, y_lb, x_ulb, phi=self.meta_phi, eps_scale=self.eps_scale,
                                               batched=self.meta_batched, reduce=ctx.reduce_grad)
        else:
            with eval_mode(model), torch.no_grad():
                y_tilde = F.softmax(model(x_ulb).float(), dim=1)                    # (B_u, C), Eq. 2
            if not self.meta:
                return y_tilde, y_tilde
            grad_y = meta_gradient(model, x_lb, y_lb, x_ulb, y_tilde, method=self.meta_method, phi=self.meta_phi,
                                   eps_scale=self.eps_scale, alpha=ctx.lr, reduce=ctx.reduce_grad)  # (B_u, C), Eq. 13-16
        return y_tilde, correct_pseudo_labels(y_tilde, grad_y, ctx.meta_step_size, self.projection, self.meta_step)  # Eq. 6

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepOutput:
        x_lb, y_lb, x_ulb = batch.x_lb, batch.y_lb, batch.x_ulb[0]
        y_tilde, y_hat = self.pseudo_labels(model, batch, ctx)
        if self.mixup:                                                              # Eq. 17, Alg. 2
            lam = torch.distributions.Beta(self.mixup_gamma, self.mixup_gamma).sample((x_lb.shape[0], 1))
            lam = lam.to(x_lb.device)                                               # (B, 1), used as drawn
            x_mix = lam.view(-1, 1, 1, 1) * x_lb + (1 - lam.view(-1, 1, 1, 1)) * x_ulb
            y_mix = lam * F.one_hot(y_lb, ctx.num_classes).float() + (1 - lam) * y_hat
            loss_cls = F.kl_div(F.log_softmax(model(x_mix).float(), dim=1), y_mix, reduction="batchmean")
        else:
            loss_cls = F.cross_entropy(model(x_lb).float(), y_lb)
        loss_cons = unlabeled_loss(model(x_ulb).float(), y_hat, self.consistency)
        loss = loss_cls + ctx.consistency_weight * loss_cons
        metrics = {"loss": loss.detach(), "loss_cls": loss_cls.detach(), "loss_cons": loss_cons.detach()}
        if self.meta:
            metrics["correction_l1"] = (y_hat - y_tilde).abs().sum(1).mean()
        return StepOutput(loss, metrics, (y_tilde, y_hat))


@register("neither")
class Neither(AblationRow):
    """Ablation row 1: consistency to the plain predictions, labeled CE, no mixup."""
    meta, mixup = False, False
    keys = ("consistency",)


@register("meta")
class Meta(AblationRow):
    """Ablation row 2 / Alg. 1: consistency to the meta-corrected pseudo-labels, labeled CE."""
    meta, mixup = True, False
    keys = ("consistency", *META_KEYS)


@register("mixup")
class Mixup(AblationRow):
    """Ablation row 3: cross-domain mixup and consistency with the plain predictions."""
    meta, mixup = False, True
    keys = ("consistency", "mixup_gamma")


@register("metamixup")
class MetaMixup(AblationRow):
    """Meta-gradient SSL, Alg. 2 (Zhang et al., AISTATS 2021): meta-corrected pseudo-labels, cross-domain mixup + consistency. The method."""
    meta, mixup = True, True


ROWS: dict[str, type[AblationRow]] = {"neither": Neither, "meta": Meta, "mixup": Mixup, "metamixup": MetaMixup}
