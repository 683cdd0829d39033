"""Self-training in rounds with a label bank (pseudo-labelling in rounds; Noisy Student, Xie et al. CVPR 2020), and
the paper's meta-gradient applied to the whole bank instead of one batch (metaselftrain).

Online SSL pays a forward and a backward for every unlabeled image each time it is drawn. Here the teacher (the
evaluated weights) labels the whole unlabeled pool in cheap no-grad passes once per round, and the student then
trains on labeled + bank images at the cost of a supervised step:

    q_u  = mean_{v in {id, flip}} softmax f(v(u))          before each round of `bank_every` steps   (N_u, C)
    m_b  = 1(max y_b >= bank_threshold),  y^_b = argmax y_b           y = q (selftrain) or corrected (below)
    loss = CE(f(x_lb), y_lb) + w(t) * bank_weight * (1/B_u) sum_b r_b m_b CE(f(A(u_b)), y^_b)

A is the student's view (bank_view): strong (`strong_augment`, as FixMatch) or weak; r_b = 1 without the meta part. The
labeled and strong images share one train-mode forward. The bank lives in the checkpoint.

metaselftrain adds two no-grad passes over the pool at theta +/- eps g_l (Eq. 15/16), g_l the labeled-loss
gradient over every label (or the held-out part, meta_holdout > 0), eps = eps_scale / ||g_l||:

    labels   grad_y = (p+ - p-) / eps = 2 J_p g_l  (Eq. 13, the authors' scale, MSE Phi)
             y = proj(q - rho * grad_y / rms_u ||grad_y_u||)     Eq. 6 with a fixed-length step rho = meta_rho:
             over the whole pool, so it does not fade as the lr and the one-batch ||g_l|| do online
    weights  d_u = <grad_theta CE(f(u), argmax q_u), g_l> ~ (CE(f+(u)) - CE(f-(u))) / (2 eps): a step down the
             labeled loss lowers this image's loss by lr * d_u, so d_u < 0 is a pseudo-label the labels disagree
             with (Ren et al. ICML 2018; DS3L, Guo et al. ICML 2020).  r_u = clamp(1 + d_u / rms(d), 0, 1)

The maths (g_l, J_z g_l, Eq. 13) is meta_gradient.py's; this module runs it over the pool in chunks.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..batch import Batch, PoolPasses
from ..config import Config
from ..errors import UserError
from ..models import inference_copy
from ..torch_utils import eval_mode
from .base import Algorithm, StepContext, StepOutput, register
from .common import check, masked_ce
from .meta_gradient import (correct_pseudo_labels, fused_y_tilde, grad_from_direction, head_direction, head_gradient,
                            head_logits, labeled_gradient, perturbed_logits)

POOL_CHUNK = 256   # images per forward of a whole-pool pass: 256 ran 1.4x faster than 1000 on CPU


def _put(full: Tensor | None, size: int, pos: Tensor, v: Tensor) -> Tensor:
    """Chunk v written at rows pos of the (size, ...) float32 tensor `full` (made at the first chunk). Filled in
    place, a whole-pool pass keeps no per-chunk tensors alive: those, left between one chunk's freed activations
    and the next's, would keep the allocator from reusing that memory (3 GB peak instead of 0.9 on fmnist)."""
    if full is None:
        full = torch.zeros((size, *v.shape[1:]), dtype=torch.float32, device=v.device)
    full[pos] = v.float()
    return full


@torch.no_grad()
def teacher_pass(model: nn.Module, passes: PoolPasses, batch_size: int, tta: bool,
                 features: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
    """(q, y_true, h): the eval-mode teacher's probabilities on the whole pool (N_u, C), averaged with the flipped
    image where a flip keeps the label; the pool's true labels (-1 unknown; diagnostics only); and, if asked,
    the body's features of the unflipped images (N_u, D), from the same forward (model.features, model.fc)."""
    model = inference_copy(model)                 # BN folded into the convs: the same outputs, faster
    q = labels = feats = None
    with eval_mode(model):
        for pos, x, y in passes.pool(batch_size):
            if features:
                h = model.features(x)
                feats = _put(feats, passes.size, pos, h)
                p = F.softmax(model.fc(h).float(), dim=1)
            else:
                p = F.softmax(model(x).float(), dim=1)
            if tta and passes.flip:
                p = (p + F.softmax(model(x.flip(-1)).float(), dim=1)) / 2
            q = _put(q, passes.size, pos, p)
            labels = _put(labels, passes.size, pos, y.float() + 1)     # every rank's rows summed: -1 -> 0 first
    h = passes.sum_all(feats) if features else None
    return passes.sum_all(q), passes.sum_all(labels).long() - 1, h


def labeled_mean(passes: PoolPasses, batch_size: int, held_out: bool, total: dict[str, Tensor],
                 chunk_sum: Callable[[Tensor, Tensor], dict[str, Tensor]]) -> dict[str, Tensor]:
    """A g_l (Eq. 14) over every labeled image (or the held-out part) and process: the sum of `chunk_sum(x, y)`
    (a chunk's summed-CE gradient) over chunks, added into the zeros `total`, divided by the image count."""
    count = torch.zeros((), device=next(iter(total.values())).device)
    for x, y in passes.labeled(batch_size, held_out):
        for k, g in chunk_sum(x, y).items():
            total[k] += g
        count += len(y)
    count = passes.sum_all(count).clamp_min(1)
    return {k: passes.sum_all(t) / count for k, t in total.items()}


@register("selftrain")
class SelfTrain(Algorithm):
    """Rounds of whole-pool teacher labels; the student trains on labeled + thresholded bank labels."""

    views = ("strong",)
    keys = ("bank_every", "bank_threshold", "bank_weight", "bank_view", "bank_tta")

    def __init__(self, bank_every: int = 500, bank_threshold: float = 0.9, bank_weight: float = 1.0,
                 bank_tta: bool = False, bank_view: str = "strong", chunk: int = POOL_CHUNK) -> None:
        self.bank_every, self.bank_threshold, self.bank_weight = bank_every, bank_threshold, bank_weight
        self.bank_tta, self.bank_view, self.chunk = bank_tta, bank_view, chunk
        self.views = (bank_view,)
        self.plain: Tensor | None = None      # (N_u, C) the teacher's labels q
        self.labels: Tensor | None = None     # (N_u, C) the labels trained on (q, or corrected)
        self.weights: Tensor | None = None    # (N_u,) r_u

    @staticmethod
    def bank_keys(cfg: Config) -> dict:
        """The checked bank keys of `cfg`, as the constructor's keyword arguments."""
        check("bank_every", cfg.bank_every, cfg.bank_every > 0, "a positive integer (iterations per round)")
        check("bank_threshold", cfg.bank_threshold, 0 <= cfg.bank_threshold <= 1, "a number in [0, 1]")
        check("bank_weight", cfg.bank_weight, cfg.bank_weight >= 0, "a number >= 0")
        return {k: getattr(cfg, k) for k in SelfTrain.keys}

    @classmethod
    def from_config(cls, cfg: Config) -> SelfTrain:
        return cls(**SelfTrain.bank_keys(cfg))

    features = False       # relabel needs the pool's body features (model.features)

    def correct(self, model: nn.Module, passes: PoolPasses, q: Tensor, h: Tensor | None) -> tuple[Tensor, Tensor]:
        """(labels, weights) the student trains on: the teacher's own here."""
        return q, torch.ones(len(q), device=q.device)

    def relabel(self, model: nn.Module, passes: PoolPasses, ctx: StepContext) -> dict[str, Tensor]:
        if self.features and not (hasattr(model, "features") and isinstance(getattr(model, "fc", None), nn.Linear)):
            raise UserError(f"bank_params=head needs a backbone with .features() and a linear head .fc; "
                            f"{type(model).__name__} has not: set bank_params=all")
        q, y_true, h = teacher_pass(model, passes, self.chunk, self.bank_tta, self.features)
        labels, weights = self.correct(model, passes, q, h)
        self.plain, self.labels, self.weights = q, labels, weights
        return bank_quality(q, labels, weights, y_true, self.bank_threshold)

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepOutput:
        if self.labels is None or batch.idx_ulb is None:
            raise RuntimeError("selftrain steps need the label bank: the trainer relabels the pool before the first step")
        b = len(batch.x_lb)
        logits = model(torch.cat([batch.x_lb, batch.x_ulb[0]])).float()      # one forward, (B_l + B_u, C)
        y = self.labels[batch.idx_ulb]                                          # (B_u, C)
        conf, hard = y.max(dim=1)
        mask = (conf >= self.bank_threshold).float() * self.weights[batch.idx_ulb]
        loss_cls = F.cross_entropy(logits[:b], batch.y_lb)
        loss_bank = masked_ce(logits[b:], hard, mask)
        loss = loss_cls + ctx.consistency_weight * self.bank_weight * loss_bank
        return StepOutput(loss, {"loss": loss.detach(), "loss_cls": loss_cls.detach(), "loss_bank": loss_bank.detach(),
                                 "mask": mask.mean()}, (self.plain[batch.idx_ulb], y))

    def state_dict(self) -> dict:
        return {"plain": self.plain, "labels": self.labels, "weights": self.weights}

    def load_state_dict(self, state: dict) -> None:
        self.plain, self.labels, self.weights = state.get("plain"), state.get("labels"), state.get("weights")


@register("metaselftrain")
class MetaSelfTrain(SelfTrain):
    """selftrain with the bank corrected by the whole-pool first-order meta-gradient: labels or weights."""

    keys = SelfTrain.keys + ("bank_meta", "bank_params", "meta_rho", "eps_scale", "projection", "meta_holdout")

    def __init__(self, bank_every: int = 500, bank_threshold: float = 0.9, bank_weight: float = 1.0,
                 bank_tta: bool = False, bank_view: str = "strong", chunk: int = POOL_CHUNK, *,
                 bank_meta: str = "labels", bank_params: str = "head", meta_rho: float = 0.1, eps_scale: float = 0.01,
                 projection: str = "relu", meta_holdout: float = 0.0) -> None:
        super().__init__(bank_every, bank_threshold, bank_weight, bank_tta, bank_view, chunk)
        self.bank_meta, self.bank_params, self.meta_rho, self.eps_scale = bank_meta, bank_params, meta_rho, eps_scale
        self.projection, self.meta_holdout, self.features = projection, meta_holdout, bank_params == "head"

    @classmethod
    def from_config(cls, cfg: Config) -> MetaSelfTrain:
        return cls(**SelfTrain.bank_keys(cfg), bank_meta=cfg.bank_meta, bank_params=cfg.bank_params,
                   meta_rho=cfg.meta_rho, eps_scale=cfg.eps_scale, projection=cfg.projection,
                   meta_holdout=cfg.meta_holdout)

    def correct(self, model: nn.Module, passes: PoolPasses, q: Tensor, h: Tensor | None) -> tuple[Tensor, Tensor]:
        """Eq. 13 for every pool image: dz = J_z g_l (the logits' derivative along g_l), closed form in the
        features for bank_params=head, else the central difference of two more pool passes (Eq. 15/16); then
        the labels' fixed-length step (Eq. 6) or the weights from d_u = <dCE(f(u), argmax q)/dz, dz>."""
        held_out = self.meta_holdout > 0
        if h is not None:                                           # bank_params=head: exact, no extra pass
            fc = model.fc
            total = {"weight": torch.zeros_like(fc.weight, dtype=torch.float32),
                     **({"bias": torch.zeros_like(fc.bias, dtype=torch.float32)} if fc.bias is not None else {})}
            with eval_mode(model), torch.no_grad():
                g_l = labeled_mean(passes, self.chunk, held_out, total,
                                   lambda x, y: head_gradient(model.features(x).float(), y, fc, "sum"))   # Eq. 14
                p = F.softmax(head_logits(h, fc), dim=1)
                dz = head_direction(h, g_l)                         # (N_u, C) = J_z g_l
        else:
            total = {k: torch.zeros_like(v) for k, v in model.named_parameters() if v.requires_grad}
            with eval_mode(model):
                g_l = labeled_mean(passes, self.chunk, held_out, total,
                                   lambda x, y: labeled_gradient(model, x, y, "sum"))                     # Eq. 14
            both = None
            with eval_mode(model):
                for pos, x, _ in passes.pool(self.chunk):
                    lp, lm, eps = perturbed_logits(model, x, g_l, eps_scale=self.eps_scale)     # Eq. 15
                    both = _put(both, 2 * passes.size, pos, (lp.float() - lm.float()) / (2 * eps))  # ~ J_z g_l
                    both = _put(both, 2 * passes.size, pos + passes.size, fused_y_tilde(lp, lm))
            both = passes.sum_all(both)
            dz, p = both[:passes.size], both[passes.size:]
        if self.bank_meta == "labels":
            grad_y = grad_from_direction(p, dz, "mse")             # Eq. 13 for MSE Phi: 2 J_p g_l
            return (correct_pseudo_labels(q, grad_y, self.meta_rho, self.projection, "normalised"),
                    torch.ones(len(q), device=q.device))
        d_u = ((p - F.one_hot(q.argmax(1), q.shape[1]).float()) * dz).sum(1)   # <grad_theta CE(f(u), argmax q), g_l>
        return q, (1 + d_u / (d_u.pow(2).mean().sqrt() + 1e-12)).clamp(0, 1)


def bank_quality(q: Tensor, labels: Tensor, weights: Tensor, y_true: Tensor, threshold: float) -> dict[str, Tensor]:
    """The bank's diagnostics on pool images whose true label is known: kept share, accuracy of all and of kept
    labels, and what the correction did, as shares of those images: `fixed` (argmax moved to the true class, or a
    wrong kept label's lost weight) and `broken` (moved away from it, or a right kept label's lost weight)."""
    conf, y_hat = labels.max(1)
    kept = conf >= threshold
    out = {"bank_kept": kept.float().mean()}
    known = y_true >= 0
    if not bool(known.any()):
        return out
    right, was_right = y_hat == y_true, q.argmax(1) == y_true
    n = known.sum().clamp_min(1)
    lost = (1 - weights) * kept.float()
    out.update({
        "bank_acc": (right & known).sum() / n,
        "bank_acc_kept": (right & known & kept).sum() / (known & kept).sum().clamp_min(1),
        "bank_fixed": ((right & ~was_right & known).float() + lost * (~right & known).float()).sum() / n,
        "bank_broken": ((~right & was_right & known).float() + lost * (right & known).float()).sum() / n,
    })
    return out
