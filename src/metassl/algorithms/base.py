"""The training-step interface every algorithm implements; the trainer owns everything else.

An algorithm turns one batch into `(loss, metrics)`. It never touches the optimiser, the schedule,
the data pipeline, checkpoints or logging. Metrics are 0-dim tensors (no host sync in the step).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor, nn

from ..config import Config


@dataclass
class Batch:
    """One iteration's data, already augmented and normalised on the training device."""

    x_lb: Tensor                     # (B_l, C, H, W) labeled images
    y_lb: Tensor                     # (B_l,) int64 labels
    x_ulb: list[Tensor]              # the unlabeled views the algorithm asked for, each (B_u, C, H, W)
    y_ulb: Tensor | None = None      # (B_u,) true labels of the unlabeled images, diagnostics only: never in a loss


@dataclass
class StepContext:
    """Schedule values at this iteration (computed by the trainer)."""

    iteration: int
    lr: float                        # alpha_t, the current learning rate
    beta: float                      # beta_t, the meta learning rate
    consistency_weight: float        # w(t), ramped
    num_classes: int
    reduce_grad: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None  # local g_l -> global (torchrun)


class Algorithm:
    """Base class: override `step`; `views` names the unlabeled views the step needs."""

    views: tuple[str, ...] = ("weak",)   # each entry: "weak" or "strong"; one tensor per entry in Batch.x_ulb
    uses_unlabeled: bool = True

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def after_update(self, model: nn.Module) -> None:
        """Called after each optimiser step (e.g. a Mean Teacher's EMA update)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


ALGORITHMS: dict[str, Callable[[Config], Algorithm]] = {}


def register(name: str) -> Callable:
    """Decorator: register a factory `Config -> Algorithm` under `name`."""

    def wrap(factory: Callable[[Config], Algorithm]) -> Callable[[Config], Algorithm]:
        ALGORITHMS[name] = factory
        return factory

    return wrap


def build_algorithm(cfg: Config) -> Algorithm:
    return ALGORITHMS[cfg.algorithm](cfg)
