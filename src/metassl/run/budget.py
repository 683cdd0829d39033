"""A wall-clock budget (`time_limit`) as an iteration count.

`measure_costs` times a few steps, one evaluation and a slice of a label-bank pass on throwaway copies of the
run; `fit_iterations` then finds the longest run whose steps, bank rounds and evaluations fit the seconds left,
with the schedule's fractions taken at that length; `fit_budget` fixes that count once and saves it with the
config, so a resume or a replay with `iterations=N` runs exactly the same schedule.

The trainer (train.py) hands over its run and its own step, evaluation and pool-pass functions, so this module
times exactly what the loop runs and imports nothing above run/.
"""
from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator

import torch

from ..config import Config
from ..errors import UserError
from ..schedule import check_schedule, unlabeled_schedule
from ..torch_utils import native_bf16, rng_state, set_rng_state
from . import distributed

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


def measure_costs(run: Any, *, step: Callable[..., Any], context: Callable[..., Any], evaluate: Callable[..., float],
                  passes: Callable[..., Any], labeled_only: Any, autocast: Any, steps: int = 6, seconds: float = 1.0,
                  pool_images: int = 2048) -> Costs:
    """Seconds per step (the algorithm's and the labeled-only one), per evaluation and per label-bank round, timed on
    throwaway copies of the run's model, EMA, optimiser and algorithm with the RNG restored after: the run itself is
    untouched. Every rank takes part (the steps' collectives); rank 0's clock decides (fit_budget).

    `run` is the trainer's Run; the rest are the trainer's own operations: `step` one optimiser step (train_step),
    `context(run, cfg, it)` a step's StepContext, `evaluate(run, split, model)` a top-1 error, `passes(run, pool)` the
    whole-pool passes over `pool`, `labeled_only` the labeled-only warm-up's algorithm, `autocast` the steps' autocast."""
    cfg, d = run.cfg, run.dist
    rng = rng_state()
    probe = cfg.fitted(1000)                       # a mid-run step: past the warm-ups, the consistency weight on
    it = (int(probe.labeled_warmup) + probe.iterations) // 2
    ctx = context(run, probe, it)
    model, ema, algo = copy.deepcopy(run.model), copy.deepcopy(run.ema), copy.deepcopy(run.algo)
    opt = type(run.opt)(model.parameters(), **run.opt.defaults)
    sync = torch.cuda.synchronize if run.device.type == "cuda" else (lambda: None)

    def per_step(step_algo: Any, views: tuple[str, ...]) -> float:
        """Mean seconds of `steps` steps after two untimed ones (kernel selection, allocation); in one process it
        times up to 8x more while they take under `seconds` (fast steps: a steadier mean)."""
        most = steps if d.world > 1 else 8 * steps
        batches = run.data.batches(it, it + most + 2, views, cfg.batch_size, unlabeled_schedule(probe, d.world),
                                   cfg.seed, d.rank, d.world)
        for i, batch in enumerate(batches):
            if i == 2:
                sync()
                t0 = time.perf_counter()
            elif i >= steps + 2 and time.perf_counter() - t0 >= seconds:
                return (time.perf_counter() - t0) / (i - 2)
            step(model, opt, step_algo, batch, ctx, autocast=autocast, d=d, sync_bn=cfg.sync_bn, ema=ema,
                 ema_decay=cfg.ema)
            sync()
        return (time.perf_counter() - t0) / most

    warm_step = per_step(labeled_only, ()) if algo.uses_unlabeled and probe.labeled_warmup else 0.0
    bank = 0.0
    if algo.bank_every:          # a slice of the pool, its chunks after the first scaled to the whole pool
        marks: list[tuple[float, int]] = []        # (time a chunk was asked for, images before it)

        def pool(bs: int) -> Iterator:
            seen = 0
            for chunk in run.data.pool_batches(bs, d.rank, d.world):
                marks.append((time.perf_counter(), seen))
                if seen >= pool_images:
                    return
                seen += len(chunk[1])
                yield chunk

        t0 = time.perf_counter()
        with autocast:                              # the bank's passes run under the steps' autocast
            algo.relabel(ema if ema is not None else model, passes(run, pool), ctx)
        sync()
        (t_first, _), (t_second, first), (t_end, seen) = marks[0], marks[min(1, len(marks) - 1)], marks[-1]
        per_image = (t_end - t_second) / max(1, seen - first)
        outside = (time.perf_counter() - t0) - (t_end - t_first)          # correction, sums, bank statistics
        bank = outside + (t_second - t_first) + per_image * (len(run.data.unlabeled) / d.world - first)
    step_seconds = per_step(algo, algo.views if algo.uses_unlabeled else ())
    t0 = time.perf_counter()
    for split in ["test"] + (["val"] if len(run.data.val) else []):
        for m in [ema if ema is not None else model] + ([model] if ema is not None else []):
            evaluate(run, split, m)
    evaluation = time.perf_counter() - t0
    set_rng_state(rng)
    return Costs(step_seconds, warm_step or step_seconds, evaluation, bank)


def fit_budget(run: Any, costs: Costs, t_call: float, rebuild: Callable[[Config, int], Any]) -> None:
    """time_limit: fix the run's `iterations` to what the seconds left since `t_call` afford at `costs` (schedule
    fractions taken at that length), rebuild its algorithm for it (`rebuild(cfg, world)`: build_algorithm), and save
    the fitted config (time_limit spent), so that a resume, a torchrun restart or a replay with iterations=N is exact.
    Rank 0 measures and decides, every rank follows."""
    cfg, d = run.cfg, run.dist
    left = cfg.time_limit - (time.perf_counter() - t_call)
    n = fit_iterations(cfg, left, costs, run.algo.uses_unlabeled)
    n, costs, left = distributed.broadcast_object((n, costs, left), d)
    budget = f"time_limit={cfg.time_limit:g}s"
    if n == 0:
        need = plan_seconds(cfg, 1, costs, run.algo.uses_unlabeled) / MARGIN
        raise UserError(f"{budget} leaves {left:.0f} s after setup, less than the shortest run needs on this machine "
                        f"({need:.0f} s: a step, an evaluation" + (", a label-bank round" if costs.bank else "")
                        + "); give a longer time_limit")
    fitted = cfg.fitted(n)
    check_schedule(fitted, run.algo.uses_unlabeled, run.algo.bank_every, f"{budget} affords {n} iterations, and ")
    run.cfg, run.algo, run.time_limit, run.logger.total = fitted, rebuild(fitted, d.world), cfg.time_limit, n
    if d.main:
        run.dir.write_config(fitted)
    run.logger.write({"iteration": 0, "kind": "budget", "time_limit": cfg.time_limit, "seconds_left": round(left, 2),
                      "iterations": n, **costs.to_dict()})
    steps = plan_seconds(fitted, n, Costs(costs.step, costs.warm_step, 0.0), run.algo.uses_unlabeled)
    if d.main and steps < 0.5 * MARGIN * left:         # most of the budget would go to passes that train nothing
        print(f"metassl: warning: {budget} leaves {steps:.0f} of {left:.0f} s for training steps ({n} iterations); "
              f"the rest goes to evaluations" + (" and label-bank passes" if costs.bank else "")
              + ": a longer time_limit, or eval_every=0 (evaluate at the end only), trains more", file=sys.stderr)
    if not run.logger.quiet:
        print(f"metassl: {budget}: {n} iterations fit ({1000 * costs.step:.0f} ms per step, {costs.evaluation:.1f} s per "
              f"evaluation" + (f", {costs.bank:.1f} s per bank round" if costs.bank else "") + ")"
              + ("; this device computes bf16 natively: amp=true fits more (1.6-1.7x on a Zen 4 CPU)"
                 if not cfg.amp and native_bf16(run.device) else ""),
              file=sys.stderr, flush=True)
