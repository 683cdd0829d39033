"""The schedules: learning rate, the correction's step size beta_t, the consistency ramp w(t), and the images
a run has consumed, as pure functions of the (0-based) iteration and the config; and whether a run can hold its
schedule at all (`check_schedule`)."""
from __future__ import annotations

import math

from .config import Config, parse_steps
from .data.sampling import UnlabeledSchedule
from .errors import UserError


def lr_at(it: int, cfg: Config) -> float:
    """Linear warm-up to cfg.lr, then cosine to 0, step decay, or constant. The warm-up and the decay see
    t = it + 1 (lr_origin=one) or t = it (zero: the authors', lr 0 at the first step, decay after a milestone)."""
    t = it + 1 if cfg.lr_origin == "one" else it
    if it < cfg.warmup:
        return cfg.lr * t / cfg.warmup
    if cfg.lr_schedule == "cosine":
        progress = (it - cfg.warmup) / max(1, cfg.iterations - cfg.warmup)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.lr_schedule == "step":
        return cfg.lr * cfg.lr_decay ** sum(t > s for s in parse_steps(cfg.lr_steps))
    return cfg.lr


def meta_step_size_at(it: int, cfg: Config) -> float:
    """The correction's step size (StepContext.meta_step_size). meta_step=lr: beta_t = beta * lr_t (authors, beta=1), a
    constant, or beta on the lr's shape. meta_step=normalised: rho_t = meta_rho, constant or on the lr's shape
    (beta_schedule lr and cosine alike: rho is a length on the simplex, not a multiple of the lr)."""
    if cfg.meta_step == "normalised":
        return cfg.meta_rho * (1.0 if cfg.beta_schedule == "constant" else lr_at(it, cfg) / cfg.lr)
    if cfg.beta_schedule == "constant":
        return cfg.beta
    return cfg.beta * lr_at(it, cfg) / (cfg.lr if cfg.beta_schedule == "cosine" else 1.0)


def consistency_weight_at(it: int, cfg: Config) -> float:
    """w(t): linear ramp from 0 to consistency_weight over consistency_rampup iterations, starting when the
    labeled-only warm-up (labeled_warmup) ends."""
    t = it - cfg.labeled_warmup
    if t < 0:
        return 0.0
    if cfg.consistency_rampup == 0:
        return cfg.consistency_weight
    return cfg.consistency_weight * min(1.0, t / cfg.consistency_rampup)


def unlabeled_schedule(cfg: Config, world: int = 1) -> UnlabeledSchedule:
    """The unlabeled batch of every iteration: fixed, or growing after the labeled-only warm-up."""
    return UnlabeledSchedule(cfg.unlabeled_batch_size, cfg.unlabeled_batch_start, cfg.unlabeled_batch_rampup,
                             cfg.labeled_warmup, world)


def images_seen(n: int, cfg: Config, uses_unlabeled: bool, world: int = 1) -> int:
    """Labeled + unlabeled images the first n iterations of `world` processes consume (global): the
    labeled-only warm-up draws no unlabeled batch."""
    ulb = unlabeled_schedule(cfg, world)
    unlabeled = ulb.first(n) - ulb.first(min(n, cfg.labeled_warmup)) if uses_unlabeled else 0
    return n * cfg.batch_size + unlabeled


def check_schedule(cfg: Config, uses_unlabeled: bool, bank_every: int, why: str = "") -> None:
    """One-line UserError for a schedule the run cannot hold: a labeled-only warm-up as long as the run (the
    algorithm would never take its own step and the run would be the labels alone under its name), or a
    label-bank round (every `bank_every` iterations) longer than the steps left after the warm-up."""
    if not uses_unlabeled:
        return
    ssl = cfg.iterations - int(cfg.labeled_warmup)
    if ssl <= 0:
        raise UserError(f"{why}labeled_warmup={int(cfg.labeled_warmup)} is as long as the run (iterations={cfg.iterations}): "
                        f"algorithm={cfg.algorithm} would train on the labels alone; give labeled_warmup a fraction of "
                        f"the run (e.g. 0.4) or train longer")
    if bank_every and bank_every > ssl:
        raise UserError(f"{why}bank_every={bank_every} is longer than the {ssl} iterations after labeled_warmup: "
                        f"no label-bank round fits; give bank_every a fraction of the run (e.g. 0.2) or train longer")
