"""A wall-clock budget (`time_limit`) as an iteration count.

The trainer times a few steps, one evaluation and a slice of a label-bank pass on throwaway copies
(train.py, `measure_costs`); `fit_iterations` then finds the longest run whose steps, bank rounds and
evaluations fit the seconds left, with the schedule's fractions taken at that length. The count is fixed
once and saved with the config, so a resume or a replay with `iterations=N` runs exactly the same schedule.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..config import Config

MARGIN = 0.97      # share of the seconds left that the plan may fill: the rest absorbs checkpoints and logging


@dataclass
class Costs:
    """Measured seconds of each kind of work a run does."""

    step: float            # one step of the algorithm
    warm_step: float       # one labeled-only step (labeled_warmup)
    evaluation: float      # one evaluation (test, validation, raw weights beside an EMA)
    bank: float = 0.0      # one whole-pool relabelling of a label bank (0: the algorithm keeps none)

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 5) for k, v in asdict(self).items()}


def plan_seconds(cfg: Config, iterations: int, costs: Costs, uses_unlabeled: bool) -> float:
    """Predicted seconds of a run of `iterations` (schedule fractions taken at that length)."""
    c = cfg.fitted(iterations)
    n = c.iterations
    warm = min(int(c.labeled_warmup), n) if uses_unlabeled else 0
    evals = (n // c.eval_every if c.eval_every else 0) + (1 if not c.eval_every or n % c.eval_every else 0)
    rounds = math.ceil((n - warm) / c.bank_every) if costs.bank and n > warm else 0
    return warm * costs.warm_step + (n - warm) * costs.step + evals * costs.evaluation + rounds * costs.bank


def fit_iterations(cfg: Config, seconds: float, costs: Costs, uses_unlabeled: bool) -> int:
    """The most iterations whose predicted seconds fit MARGIN x `seconds` (0 if not even one does)."""
    budget = MARGIN * seconds
    if plan_seconds(cfg, 1, costs, uses_unlabeled) > budget:
        return 0
    lo, hi = 1, 2
    while plan_seconds(cfg, hi, costs, uses_unlabeled) <= budget and hi < 10 ** 9:
        lo, hi = hi, hi * 2
    while hi - lo > 1:                      # plan_seconds(lo) fits, plan_seconds(hi) does not
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if plan_seconds(cfg, mid, costs, uses_unlabeled) <= budget else (lo, mid)
    return lo
