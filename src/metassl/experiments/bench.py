"""The benchmark: every algorithm under one protocol on offline data, then the paper's tables.

    metassl bench fmnist-1000 --quick                          # one seed, small budget, ~10 min on 2 cores
    metassl bench fmnist-1000 --seeds 0,1,2                    # the full suite (see docs/ALGORITHMS.md)
    metassl bench fmnist-100 --algorithms supervised,fixmatch,metamixup --out runs/bench/f100

Protocol (suites.py): the `fmnist-1000` preset (cnn, batch 64 labeled + 64 unlabeled, SGD lr 0.05 momentum 0.9,
wd 1e-4, warm-up then cosine) with the budget, warm-up and ramp there, the same for every algorithm; each
algorithm keeps its own paper's hyperparameters (config.py). The split seed is the run seed. Nothing is
selected on the test set: the final error and the median of the last 5 evaluations are reported. Runs go to
OUT/<algorithm>-s<seed>/; a finished run (results.json) is skipped, an interrupted one resumed from its
checkpoint, so re-running the command finishes a bench. Tables: report.py.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ..config import Config
from ..data import ImageData, load_dataset
from ..errors import Interrupted, UserError
from ..run.log import read_metrics
from .report import WEIGHT_COLUMNS, write_summary
from .suites import (DEFAULT_ALGORITHMS, ENTRIES, FULL, QUICK, SUITES, TAIL, TARGET_ERROR, default_out, run_config,
                     run_one)
from .tune import bench_values, load_tuned


def run_bench(suite: str, *, seeds: list[int] = (0, 1, 2), algorithms: list[str] | None = None, quick: bool = False,
              out: str | Path | None = None, overrides: dict[str, Any] | None = None, data: ImageData | None = None,
              quiet: bool = True, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
              tuned_dir: str | Path | None = None, raw_weights: bool = False) -> list[dict[str, Any]]:
    """Run (or finish) a suite and write summary.csv and summary.md into `out`; returns the CSV rows.
    With `tuned_dir` every entry takes the values `metassl tune` chose (tune.py; an entry without a file is an error).
    With `raw_weights` the tables report the raw weights of runs that evaluated an EMA beside them (ema > 0):
    one set of runs decides on validation whether EMA evaluation pays, and reports either."""
    from ..algorithms import ALGORITHMS

    if suite not in SUITES:
        raise UserError(f"unknown suite {suite!r}; choose one of: {', '.join(SUITES)}")
    names = list(algorithms or DEFAULT_ALGORITHMS)
    unknown = [n for n in names if n not in ALGORITHMS and n not in ENTRIES]
    if unknown:
        raise UserError(f"unknown algorithm {unknown[0]!r}; choose from: {', '.join(sorted([*ALGORITHMS, *ENTRIES]))}")
    if not seeds:
        raise UserError("no seeds given; e.g. --seeds 0,1,2")
    overrides = dict(overrides or {})
    out = Path(out) if out else default_out(suite, quick, bool(tuned_dir))
    out.mkdir(parents=True, exist_ok=True)
    tuned = {n: load_tuned(suite, n, tuned_dir) for n in names} if tuned_dir else {}
    length = overrides.get("iterations", (QUICK if quick else FULL)["iterations"])
    values = {n: bench_values(e, length) for n, e in tuned.items()}
    # seed-major order: an interrupted bench already has every algorithm at the first seed(s)
    configs = {(n, s): run_config(suite, n, s, overrides, quick=quick, tuned=values.get(n))
               for s in seeds for n in names}                                               # validate all first
    if data is None:
        first = next(iter(configs.values()))
        data = load_dataset(first.dataset, first.data_dir or None, first.image_size or None)
    rows, t0 = [], time.perf_counter()
    for i, ((name, seed), cfg) in enumerate(configs.items(), 1):
        try:
            res, done = run_one(cfg, out / f"{name}-s{seed}", data, quiet)
        except Interrupted as e:
            raise Interrupted(f"{e} (or re-run this bench command: it skips finished runs and resumes this one)",
                              e.exit_code) from None
        if raw_weights:
            res = raw_results(res, out / f"{name}-s{seed}")
        elif res.get("test_error_raw") is not None:                  # an EMA was evaluated, raw beside it
            res = {**res, "test_error_ema": res["test_error"], "val_error_ema": res.get("val_error")}
        rows.append({"algorithm": name, "seed": seed, "num_labels": res["num_labels"],
                     "test_error": round(res["test_error"], 4),
                     "test_error_median_last5": round(res["test_error_median_last5"], 4),
                     "tail_change": tail_change(out / f"{name}-s{seed}", cfg.iterations,
                                                "test_error_raw" if raw_weights else "test_error"),
                     "wall_seconds": res["wall_seconds"], "images_per_second": res["images_per_second"],
                     "train_seconds": res.get("train_seconds", ""),
                     "seconds_to_target": seconds_to(out / f"{name}-s{seed}", TARGET_ERROR[suite]),
                     **dict(zip(("changed_better", "changed_worse"), corrections(out / f"{name}-s{seed}", cfg))),
                     **{k: "" if res.get(k) is None else round(res[k], 4)
                        for k in WEIGHT_COLUMNS}})
        log(f"[{i}/{len(configs)}] {name} seed {seed}: {done}, test error {res['test_error']:.2f}% "
            f"(median of last 5: {res['test_error_median_last5']:.2f}%), {res['wall_seconds']:.0f} s; "
            f"bench {time.perf_counter() - t0:.0f} s so far")
        write_summary(out, suite, rows, cfg, quick, overrides, tuned, raw_weights)   # partial tables while it runs
    first = min(seed for _, seed in configs)
    try:                                                          # the curves of the first seed, overlaid
        from ..diagnostics.plot import plot_runs
        names_first = [name for name, seed in configs if seed == first]
        plot_runs([out / f"{name}-s{first}" for name in names_first], out / "plots", labels=names_first)
        write_summary(out, suite, rows, cfg, quick, overrides, tuned, raw_weights)
    except UserError as e:                                        # e.g. matplotlib missing: tables only
        log(f"no curves: {e}")
    return rows


def raw_results(res: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """A run's results with its raw weights' errors in place of the EMA's (the run must have evaluated both)."""
    if res.get("test_error_raw") is None:
        raise UserError(f"{run_dir} evaluated no EMA beside its raw weights (ema=0): its errors are the raw "
                        f"weights' already; leave out --raw-weights")
    raw = [r["test_error_raw"] for r in read_metrics(run_dir) if r["kind"] == "eval" and "test_error_raw" in r]
    return {**res, "test_error": res["test_error_raw"], "test_error_median_last5": statistics.median(raw[-5:]),
            "val_error": res.get("val_error_raw"), "test_error_ema": res["test_error"], "val_error_ema": res.get("val_error")}


def seconds_to(run_dir: Path, target: float) -> float | str:
    """Training seconds until the run's test error first reached `target` %, or "" (never, or untimed records)."""
    from ..diagnostics.plot import time_to_error

    try:
        hit = time_to_error(read_metrics(run_dir), target)
    except UserError:
        return ""
    return round(hit[0], 1) if hit else ""


def tail_change(run_dir: Path, iterations: int, key: str = "test_error") -> float | str:
    """Whether a run had converged: its last evaluation's `key` minus the first one at or after (1 - TAIL) x
    iterations, in points (about 0: flat; below 0: still improving); "" without two evaluations there."""
    try:
        evals = {r["iteration"]: r[key] for r in read_metrics(run_dir) if r["kind"] == "eval" and r.get(key) is not None}
    except UserError:
        return ""
    tail = [evals[i] for i in sorted(evals) if i >= (1 - TAIL) * iterations]
    return round(tail[-1] - tail[0], 2) if len(tail) >= 2 else ""


def corrections(run_dir: Path, cfg: Config) -> tuple[float | str, float | str]:
    """The meta-gradient's effect on the pseudo-labels (the pseudo-label diagnostic): the mean share (%) of unlabeled
    rows whose argmax the correction moved to the true class, and away from it, over the logged batches of the
    first half of the iterations that ran the correction (those after `labeled_warmup`); ("", "") if none logged."""
    start = min(cfg.labeled_warmup, cfg.iterations)
    end = start + (cfg.iterations - start) / 2
    try:
        logged = [r for r in read_metrics(run_dir) if r["kind"] == "train" and start < r["iteration"] <= end
                  and r.get("pl_changed_better") is not None]
    except UserError:
        return "", ""
    if not logged:
        return "", ""
    return tuple(round(100 * statistics.mean(r[k] for r in logged), 2) for k in ("pl_changed_better", "pl_changed_worse"))
