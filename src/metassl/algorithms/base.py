"""The training-step interface every algorithm implements; the trainer owns everything else.

An algorithm turns one batch into a `StepOutput` (the loss, its terms as metrics, and the pseudo-labels
for diagnostics). It never touches the optimiser, the schedule, the data pipeline, checkpoints or
logging. Metrics are 0-dim tensors (no host sync in the step).

What the trainer needs to know before the first step is declared on the class, readable without
building the algorithm: `views` (the unlabeled views a batch must carry), `uses_unlabeled`,
`all_labels` (split with every training label), `mixup` (pairs each labeled image with one
unlabeled image, so both batches must be the same size), `keys` (the algorithm-specific Config keys it
reads: meta_holdout among them, it takes a held-out labeled batch) and `distributed` (False: one process only).

Under torchrun each process steps on its shard of the global batch. An algorithm that keeps state across
steps (a threshold's EMA, a per-image status) updates it from `ctx.gather(rows)`, the global batch's rows
in rank order, so every process holds the state one process with the whole batch would hold, and the
checkpoint rank 0 writes is every rank's. A loss that is not a mean over rows sums over `ctx.total`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, TypeVar

from torch import Tensor, nn

from .. import config
from ..batch import Batch, PoolPasses
from ..config import FIELDS, Config
from ..presets import PRESETS
from ..errors import UserError


def _same(t: Tensor) -> Tensor:
    return t


@dataclass
class StepContext:
    """Schedule values at this iteration (computed by the trainer)."""

    iteration: int
    lr: float                        # alpha_t, the current learning rate
    meta_step_size: float            # Eq. 6's step: beta_t (meta_step=lr, the paper) or rho_t (meta_step=normalised)
    consistency_weight: float        # w(t), ramped
    num_classes: int
    reduce_grad: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None  # local g_l -> global (torchrun)
    num_unlabeled: int = 0           # images in the unlabeled pool (Batch.idx_ulb < this); 0 = unknown
    gather: Callable[[Tensor], Tensor] = _same   # this process's rows (B, ...) -> the global batch's (N B, ...), no grad
    total: Callable[[Tensor], Tensor] = _same    # a sum over this process's rows -> over the global batch's, with grad


@dataclass
class StepOutput:
    """What one step hands the trainer."""

    loss: Tensor                     # () the loss to back-propagate
    metrics: dict[str, Tensor]       # name -> () detached terms, logged as they are
    pseudo_labels: tuple[Tensor, Tensor] | None = None   # (plain, final) targets (B_u, C) each: diagnostics only


class Algorithm:
    """Base class: override `step` (and `from_config`); the class attributes below are its facts."""

    views: tuple[str, ...] = ("weak",)   # each entry: "weak" or "strong"; one tensor per entry in Batch.x_ulb
    uses_unlabeled: bool = True          # False: the trainer draws no unlabeled batch
    all_labels: bool = False             # True: the split keeps every training label (num_labels=-1)
    mixup: bool = False                  # True: unlabeled_batch_size must equal batch_size
    keys: tuple[str, ...] = ()           # the algorithm-specific Config keys it reads (build_algorithm refuses others)
    distributed: bool = True             # False: one process only; build_algorithm refuses torchrun with more

    @classmethod
    def from_config(cls, cfg: Config) -> "Algorithm":
        """Check this algorithm's hyperparameters (one-line UserError) and build it."""
        return cls()

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepOutput:
        raise NotImplementedError

    bank_every: int = 0                  # > 0: a label bank; the trainer calls `relabel` before every this many steps

    def relabel(self, model: nn.Module, passes: PoolPasses, ctx: StepContext) -> dict[str, Tensor]:
        """Label the whole unlabeled pool for the next round (a label bank's teacher pass), with the evaluated
        weights; returns metrics logged as one `refresh` record. Called before the algorithm's first step and
        every `bank_every` steps after; must be deterministic, so a resumed run repeats it exactly."""
        return {}

    def after_update(self, model: nn.Module) -> None:
        """Called after each optimiser step (e.g. a Mean Teacher's EMA update)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


ALGORITHMS: dict[str, type[Algorithm]] = {}
A = TypeVar("A", bound=type[Algorithm])


def register(name: str) -> Callable[[A], A]:
    """Class decorator: register an Algorithm subclass under `name`."""

    def wrap(cls: A) -> A:
        ALGORITHMS[name] = cls
        return cls

    return wrap


def build_algorithm(cfg: Config, processes: int = 1) -> Algorithm:
    """The algorithm `cfg.algorithm` for `processes` torchrun processes, its keys and hyperparameters checked;
    one-line UserError for a bad name, batch, unread key or process count."""
    if cfg.algorithm not in ALGORITHMS:
        raise UserError(f"algorithm={cfg.algorithm!r} is unknown; choose one of: {', '.join(sorted(ALGORITHMS))}")
    cls = ALGORITHMS[cfg.algorithm]
    if cls.mixup and cfg.unlabeled_batch_size not in (0, cfg.batch_size):     # 0: the same as batch_size
        raise UserError(f"algorithm={cfg.algorithm} mixes each labeled image with one unlabeled image, so "
                        f"unlabeled_batch_size={cfg.unlabeled_batch_size} must equal batch_size={cfg.batch_size} (or be 0)")
    if cfg.unlabeled_batch_start and (cls.mixup or not cls.uses_unlabeled):
        why = "pairs each labeled image with one unlabeled image" if cls.mixup else "draws no unlabeled batch"
        raise UserError(f"unlabeled_batch_start={cfg.unlabeled_batch_start} grows the unlabeled batch, but "
                        f"algorithm={cfg.algorithm} {why}; drop it")
    if processes > 1 and not cls.distributed:
        raise UserError(f"algorithm={cfg.algorithm} runs in one process only and this run has {processes}; "
                        f"launch it without torchrun (or with --nproc-per-node 1)")
    check_keys(cfg)
    return cls.from_config(cfg)


def unread_keys(algorithm: str) -> set[str]:
    """The algorithm-specific keys (those some registered algorithm lists in `keys`) that `algorithm` does not read
    (none for an unknown name: build_algorithm reports that first)."""
    if algorithm not in ALGORITHMS:
        return set()
    return {k for cls in ALGORITHMS.values() for k in cls.keys} - set(ALGORITHMS[algorithm].keys)


def _defaults(cfg: Config) -> Config:
    """Config's defaults, resolved for a run as long as `cfg` (schedule fractions in iterations, as cfg's are)."""
    length = {k: getattr(cfg, k) for k in ("iterations", "time_limit") if k in FIELDS}   # what fixes the schedule
    return Config(**length).resolved()


def _at_defaults(cfg: Config, keys: set[str]) -> Config:
    """`cfg` with `keys` at their defaults for its length."""
    defaults = _defaults(cfg)
    return dataclasses.replace(cfg, **{k: getattr(defaults, k) for k in keys})


def without_unread(cfg: Config) -> Config:
    """`cfg` with every algorithm-specific key its algorithm does not read at its default. A saved config of an
    older run kept its preset's values of such keys (e.g. fixmatch with fmnist-1000's bank_every): unread, so
    resetting them changes nothing, and the run resumes under `check_keys`."""
    return _at_defaults(cfg, unread_keys(cfg.algorithm))


def build_config(preset: str | None = None, file: str | None = None, overrides: list[str] | None = None) -> Config:
    """Merge defaults < preset < config file < command line (config.merge_config). An algorithm-specific key the
    final algorithm does not read is refused (one line) if the file or the command line sets it, whatever its
    value, and falls back to its default if the preset does: the preset's values are its method's settings (the
    authors' meta_fused=false, fmnist-1000's bank_every), so `--preset fmnist-1000 algorithm=fixmatch` runs."""
    cfg = config.merge_config(preset, file, overrides)
    user = {**(config.load_file(file) if file else {}), **config.parse_overrides(overrides or [])}
    unread = unread_keys(cfg.algorithm)
    for key in sorted(set(user) & unread, key=list(FIELDS).index):
        _refuse(key, user[key], cfg.algorithm)
    return _at_defaults(cfg, set(PRESETS[preset]) & unread) if preset else cfg


def check_keys(cfg: Config) -> None:
    """One-line UserError for an algorithm-specific key set where `cfg.algorithm` does not read it: any value
    other than the default (as given, or resolved for this run's length) is refused; `build_config` has already
    refused such keys the user set at any value. A preset's values of them never get here under another
    algorithm: `build_config` drops them, the trainer loads a saved config through `without_unread`."""
    defaults = _defaults(cfg)
    for key in sorted(unread_keys(cfg.algorithm), key=list(FIELDS).index):
        value = getattr(cfg, key)
        if value not in (FIELDS[key].default, getattr(defaults, key)):       # unresolved or resolved
            _refuse(key, value, cfg.algorithm)


def _refuse(key: str, value: object, algorithm: str) -> None:
    users = [name for name, cls in sorted(ALGORITHMS.items()) if key in cls.keys]
    raise UserError(f"{key}={value!r} is not read by algorithm={algorithm}, only by {', '.join(users)}; "
                    f"drop it or choose one of those")
