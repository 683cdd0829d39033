"""The benchmark: every algorithm under one protocol on offline data, then the paper's tables.

    metassl bench fmnist-1000 --quick                          # one seed, small budget, ~10 min on 2 cores
    metassl bench fmnist-1000 --seeds 0,1,2                    # the full suite (see docs/ALGORITHMS.md)
    metassl bench fmnist-100 --algorithms supervised,fixmatch,metamixup --out runs/bench/f100

Protocol: the `fmnist-1000` preset (cnn, batch 64 labeled + 64 unlabeled, SGD lr 0.05 momentum 0.9,
wd 1e-4, warm-up then cosine) with the budget, warm-up and ramp below, the same for every algorithm;
each algorithm keeps its own paper's hyperparameters (config.py). The split seed is the run seed. Nothing is selected on the test set: the final error and the median of the last 5
evaluations are reported. Runs go to OUT/<algorithm>-s<seed>/; a finished run (results.json) is
skipped, an interrupted one resumed from its checkpoint, so re-running the command finishes a bench.
"""
from __future__ import annotations

import csv
import io
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .algorithms.metamixup import ROWS
from .config import PRESETS, Config, load_saved, to_dict
from .data import ImageData, load_dataset
from .errors import Interrupted, UserError
from .files import atomic_write_text
from .schedule import images_seen
from .tune import bench_values, load_tuned, tuned_table

SUITES: dict[str, dict[str, Any]] = {
    "fmnist-1000": dict(dataset="fashion-mnist", num_labels=1000),
    "fmnist-100": dict(dataset="fashion-mnist", num_labels=100),
}
# Time-to-accuracy: each row reports the training seconds to the first evaluation at or below this test error (%).
TARGET_ERROR = {"fmnist-1000": 15.0, "fmnist-100": 25.0}
# Iteration budgets. FULL: sized so that the 14 default entries x 3 seeds of fmnist-1000 fit in ~2 h on
# 2 CPU cores (measured step costs and the arithmetic: docs/ALGORITHMS.md); 5 evaluations per run, the
# fewest that give the median of the last 5; warm-up and consistency ramp 10% of the run, the proportion
# of the calibration runs (200 of 2000). QUICK: a smoke run of the whole pipeline (1 evaluation), not a
# result. eval_batch_size 250 is faster than 1000 on CPU and changes no number.
FULL = dict(iterations=400, eval_every=80, checkpoint_every=80, warmup=40, consistency_rampup=40, eval_batch_size=250,
            labeled_warmup=0)
QUICK = dict(iterations=100, eval_every=100, checkpoint_every=100, warmup=10, consistency_rampup=10, eval_batch_size=250,
             labeled_warmup=0)
# Bench rows that are an algorithm with an option set: name -> (algorithm, config values).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "vat-ent": ("vat", {"vat_entmin": True}),
    # the meta-gradient's variants (docs/ALGORITHMS.md, "Meta-gradient variants"): not default entries
    "metamixup-norm": ("metamixup", {"meta_step": "normalised"}),       # fixed-length step rho, not beta*||g||
    "metamixup-holdout": ("metamixup", {"meta_holdout": 0.2}),         # g_l from labels the CE never fits
    "metafixmatch-soft": ("metafixmatch", {"meta_target": "soft"}),     # CE to the corrected y^ itself
    "metafixmatch-norm": ("metafixmatch", {"meta_step": "normalised"}),
    "metafixmatch-plain": ("metafixmatch", {"meta_threshold_on": "plain"}),  # FixMatch's rows, relabelled
    "metaflexmatch-plain": ("metaflexmatch", {"meta_threshold_on": "plain"}),  # FlexMatch's rows, relabelled
}
# Each meta-gradient entry and its twin without the correction (for `mpl`: the labels alone), paired by seed.
META_TWINS = {"meta": "neither", "metamixup": "mixup", "metamixup-norm": "mixup", "metamixup-holdout": "mixup",
              "metafixmatch": "fixmatch", "metafixmatch-soft": "fixmatch", "metafixmatch-norm": "fixmatch",
              "metafixmatch-plain": "fixmatch", "metaflexmatch": "flexmatch", "metaflexmatch-plain": "flexmatch",
              "mpl": "supervised"}
# Table rows, in the paper's order: name -> label. Comparison table first, then the ablation rows.
COMPARISON = {
    "supervised": "Supervised (labeled images only)",
    "pimodel": "Pi-model (Laine & Aila 2017)",
    "meanteacher": "Mean Teacher (Tarvainen & Valpola 2017)",
    "vat": "VAT (Miyato et al. 2018)",
    "vat-ent": "VAT+Ent (Miyato et al. 2018)",
    "pseudolabel": "Pseudo-Label (Lee 2013, thresholded)",
    "mixmatch": "MixMatch (Berthelot et al. 2019)",
    "fixmatch": "FixMatch (Sohn et al. 2020)",
    "flexmatch": "FlexMatch (Zhang et al. 2021)",
    "freematch": "FreeMatch (Wang et al. 2023)",
    "softmatch": "SoftMatch (Chen et al. 2023)",
    "metamixup": "Meta-gradient SSL (ours: `metamixup`)",
    "metafixmatch": "MetaFixMatch (future direction)",
    "mpl": "Meta Pseudo Labels (Pham et al. 2021)",
    "fully-supervised": "Fully supervised (every label; reference)",
}
ABLATION = {name: (row.meta, row.mixup) for name, row in ROWS.items()}   # (meta-gradient, mixup) per row
DEFAULT_ALGORITHMS = [n for n in COMPARISON if n not in ("metamixup", "mpl")] + list(ABLATION)
WEIGHT_COLUMNS = ("val_error", "val_error_raw", "test_error_raw", "val_error_ema", "test_error_ema")  # "" if absent
CSV_COLUMNS = ("algorithm", "seed", "num_labels", "test_error", "test_error_median_last5", "tail_change", "wall_seconds",
               "images_per_second", "train_seconds", "seconds_to_target", "changed_better", "changed_worse",
               *WEIGHT_COLUMNS)
TAIL = 0.2   # "flat at the end": tail_change is the test error's change over the run's last TAIL of iterations


def run_config(suite: str, name: str, seed: int, quick: bool, overrides: dict[str, Any],
               tuned: dict[str, Any] | None = None) -> Config:
    """The resolved config of one run: preset < suite < budget < algorithm < tuned values (`--tuned`) < seed
    < user overrides."""
    algorithm, extra = VARIANTS.get(name, (name, {}))
    values = {**PRESETS["fmnist-1000"], **SUITES[suite], **(QUICK if quick else FULL), **extra, **(tuned or {}),
              "algorithm": algorithm, "seed": seed, "split_seed": seed, **overrides}
    return Config(**values).resolved()


# Keys that change speed or logging but no result: a re-run bench may differ in them.
NOT_PROTOCOL = ("threads", "data_dir", "log_every", "eval_batch_size")


def _check_same(run_dir: Path, cfg: Config) -> None:
    """A run directory may only be reused for the config this bench would run (up to NOT_PROTOCOL keys)."""
    saved = to_dict(load_saved(run_dir / "config.json"))
    wanted = to_dict(cfg)
    diff = [k for k in wanted if k not in NOT_PROTOCOL and saved.get(k) != wanted[k]]
    if diff:
        k = diff[0]
        raise UserError(f"{run_dir} was run with {k}={saved.get(k)!r}, this bench needs {k}={wanted[k]!r}; "
                        f"use another --out (or delete that run)")


def run_one(cfg: Config, run_dir: Path, data: ImageData, quiet: bool) -> tuple[dict[str, Any], str]:
    """Train, resume or skip one run; returns (results, what was done)."""
    from . import checkpoint
    from .train import train

    if (run_dir / "results.json").exists():
        _check_same(run_dir, cfg)
        return json.loads((run_dir / "results.json").read_text()), "skipped (finished)"
    if (run_dir / "config.json").exists():
        _check_same(run_dir, cfg)
        if any((run_dir / n).exists() for n in (checkpoint.LAST, checkpoint.PREV)):
            return train(cfg, run_dir, data=data, resume=True, quiet=quiet), "resumed"
        return train(cfg, run_dir, data=data, force=True, quiet=quiet), "restarted (no checkpoint yet)"
    return train(cfg, run_dir, data=data, quiet=quiet), "trained"


def run_bench(suite: str, *, seeds: list[int] = (0, 1, 2), algorithms: list[str] | None = None, quick: bool = False,
              out: str | Path | None = None, overrides: dict[str, Any] | None = None, data: ImageData | None = None,
              quiet: bool = True, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
              tuned_dir: str | Path | None = None, raw_weights: bool = False) -> list[dict[str, Any]]:
    """Run (or finish) a suite and write summary.csv and summary.md into `out`; returns the CSV rows.
    With `tuned_dir` every entry takes the values `metassl tune` chose (tune.py; an entry without a file is an error).
    With `raw_weights` the tables report the raw weights of runs that evaluated an EMA beside them (ema > 0):
    one set of runs decides on validation whether EMA evaluation pays, and reports either."""
    from .algorithms import ALGORITHMS

    if suite not in SUITES:
        raise UserError(f"unknown suite {suite!r}; choose one of: {', '.join(SUITES)}")
    names = list(algorithms or DEFAULT_ALGORITHMS)
    unknown = [n for n in names if n not in ALGORITHMS and n not in VARIANTS]
    if unknown:
        raise UserError(f"unknown algorithm {unknown[0]!r}; choose from: {', '.join(sorted([*ALGORITHMS, *VARIANTS]))}")
    if not seeds:
        raise UserError("no seeds given; e.g. --seeds 0,1,2")
    overrides = dict(overrides or {})
    out = Path(out) if out else Path("runs") / "bench" / (suite + ("-quick" if quick else "") + ("-tuned" if tuned_dir else ""))
    out.mkdir(parents=True, exist_ok=True)
    tuned = {n: load_tuned(suite, n, tuned_dir) for n in names} if tuned_dir else {}
    length = overrides.get("iterations", (QUICK if quick else FULL)["iterations"])
    values = {n: bench_values(e, length) for n, e in tuned.items()}
    # seed-major order: an interrupted bench already has every algorithm at the first seed(s)
    configs = {(n, s): run_config(suite, n, s, quick, overrides, values.get(n))
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
        from .plot import plot_runs
        names_first = [name for name, seed in configs if seed == first]
        plot_runs([out / f"{name}-s{first}" for name in names_first], out / "plots", labels=names_first)
        write_summary(out, suite, rows, cfg, quick, overrides, tuned, raw_weights)
    except UserError as e:                                        # e.g. matplotlib missing: tables only
        log(f"no curves: {e}")
    return rows


def raw_results(res: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """A run's results with its raw weights' errors in place of the EMA's (the run must have evaluated both)."""
    from .plot import read_metrics

    if res.get("test_error_raw") is None:
        raise UserError(f"{run_dir} evaluated no EMA beside its raw weights (ema=0): its errors are the raw "
                        f"weights' already; leave out --raw-weights")
    raw = [r["test_error_raw"] for r in read_metrics(run_dir) if r["kind"] == "eval" and "test_error_raw" in r]
    return {**res, "test_error": res["test_error_raw"], "test_error_median_last5": statistics.median(raw[-5:]),
            "val_error": res.get("val_error_raw"), "test_error_ema": res["test_error"], "val_error_ema": res.get("val_error")}


# --- tables ----------------------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _by_name(rows: list[dict[str, Any]], key: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in rows:
        out.setdefault(r["algorithm"], []).append(float(r[key]))
    return out


def _tails(rows: list[dict[str, Any]], name: str) -> str:
    """`name`'s tail_change over its seeds (mean ± std), "-" where no run had two evaluations in its tail."""
    tails = [float(r["tail_change"]) for r in rows if r["algorithm"] == name and r.get("tail_change") not in ("", None)]
    return _mean_std(tails) if tails else "-"


def comparison_table(rows: list[dict[str, Any]], column: str) -> str:
    """Methods x suite, error % mean ± std over seeds (the paper's Table 2 layout)."""
    final, last5, seeds = _by_name(rows, "test_error"), _by_name(rows, "test_error_median_last5"), _by_name(rows, "seed")
    lines = [f"| Method | {column}: test error % | median of last 5 evaluations % | change over the last "
             f"{TAIL:.0%} of the run (points) | seeds |", "|---|---|---|---|---|"]
    variants = {n: f"`{n}` (`{VARIANTS[n][0]}`, " + ", ".join(f"{k}={v}" for k, v in VARIANTS[n][1].items()) + ")"
                for n in final if n in VARIANTS}               # rows no table above names, after the paper's
    for name, label in {**COMPARISON, **variants}.items():
        if name in final:
            lines.append(f"| {label} | {_mean_std(final[name])} | {_mean_std(last5[name])} | {_tails(rows, name)} | "
                         f"{len(seeds[name])} |")
    return "\n".join(lines)


def ablation_table(rows: list[dict[str, Any]]) -> str:
    """Meta-gradient x mixup, 4 rows (the paper's ablation layout); "" when none of them ran."""
    final, last5 = _by_name(rows, "test_error"), _by_name(rows, "test_error_median_last5")
    lines = ["| Meta-gradient | Mixup | algorithm | test error % | median of last 5 % | change over the last "
             f"{TAIL:.0%} (points) |", "|---|---|---|---|---|---|"]
    for name, (meta, mixup) in ABLATION.items():
        if name in final:
            lines.append(f"| {'yes' if meta else 'no'} | {'yes' if mixup else 'no'} | `{name}` | "
                         f"{_mean_std(final[name])} | {_mean_std(last5[name])} | {_tails(rows, name)} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _moved(rows: list[dict[str, Any]], name: str) -> str:
    """`name`'s changed_better / changed_worse (ratio), means over its seeds; "-" where none was logged."""
    pairs = [(float(r["changed_better"]), float(r["changed_worse"])) for r in rows
             if r["algorithm"] == name and r.get("changed_better") not in ("", None)]
    if not pairs:
        return "-"
    better, worse = (statistics.mean(p[i] for p in pairs) for i in (0, 1))
    return f"{better:.1f} / {worse:.1f}" + (f" ({better / worse:.2f})" if worse > 0 else "")


def twins_table(rows: list[dict[str, Any]]) -> str:
    """Each meta-gradient entry against its twin without the correction: the paired difference by seed."""
    err = {(r["algorithm"], r["seed"]): float(r["test_error"]) for r in rows}
    lines = ["| meta entry | twin | seeds paired | meta error % | twin error % | meta - twin (points) | meta better in | "
             "pseudo-labels the correction moved to / away from the true class, first half of its iterations % |",
             "|---|---|---|---|---|---|---|---|"]
    for meta, twin in META_TWINS.items():
        seeds = sorted(s for (n, s) in err if n == meta and (twin, s) in err)
        if seeds:
            d = [err[meta, s] - err[twin, s] for s in seeds]
            lines.append(f"| `{meta}` | `{twin}` | {len(seeds)} | {_mean_std([err[meta, s] for s in seeds])} | "
                         f"{_mean_std([err[twin, s] for s in seeds])} | {_mean_std(d)} | "
                         f"{sum(x < 0 for x in d)}/{len(d)} | {_moved(rows, meta)} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _num(v: Any) -> str:
    return f"{float(v):.0f}" if v not in ("", None) else "-"


def _never(row: dict[str, Any]) -> str:
    return "not reached" if row.get("train_seconds") not in ("", None) else "-"


def seconds_to(run_dir: Path, target: float) -> float | str:
    """Training seconds until the run's test error first reached `target` %, or "" (never, or untimed records)."""
    from .plot import read_metrics, time_to_error

    try:
        hit = time_to_error(read_metrics(run_dir), target)
    except UserError:
        return ""
    return round(hit[0], 1) if hit else ""


def tail_change(run_dir: Path, iterations: int, key: str = "test_error") -> float | str:
    """Whether a run had converged: its last evaluation's `key` minus the first one at or after (1 - TAIL) x
    iterations, in points (about 0: flat; below 0: still improving); "" without two evaluations there."""
    from .plot import read_metrics

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
    from .plot import read_metrics

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


def cost_table(rows: list[dict[str, Any]], target: float) -> str:
    lines = [f"| algorithm | seed | wall s | training s | images/s | training s to {target:g} % test error |",
             "|---|---|---|---|---|---|"]
    lines += [f"| `{r['algorithm']}` | {r['seed']} | {float(r['wall_seconds']):.0f} | "
              f"{_num(r.get('train_seconds'))} | {float(r['images_per_second']):.0f} | "
              f"{_num(r.get('seconds_to_target')) if r.get('seconds_to_target') not in ('', None) else _never(r)} |"
              for r in rows]
    return "\n".join(lines)


def write_summary(out: Path, suite: str, rows: list[dict[str, Any]], cfg: Config, quick: bool,
                  overrides: dict[str, Any], tuned: dict[str, dict[str, Any]] | None = None,
                  raw_weights: bool = False) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "summary.csv", buf.getvalue())
    machine = ""
    if rows:
        first = json.loads(next(out.glob("*/results.json")).read_text())
        machine = f"{first.get('machine', '')}, device {first.get('device', '?')}"
    seeds = sorted({r["seed"] for r in rows})
    ulb = cfg.unlabeled_batch_size
    protocol = (f"{cfg.dataset}, {cfg.num_labels} labels (split seed = run seed), model `{cfg.model}`, "
                f"batch {cfg.batch_size} labeled + {ulb} unlabeled, {cfg.iterations} iterations"
                + (f", the first {cfg.labeled_warmup} labeled-only for every algorithm (`labeled_warmup`)"
                   if cfg.labeled_warmup else "") +
                f" ({cfg.iterations * cfg.batch_size} labeled and "
                f"{images_seen(cfg.iterations, cfg, True) - cfg.iterations * cfg.batch_size} "
                f"unlabeled images drawn per run; "
                f"FixMatch draws 2 views and MixMatch {cfg.mixmatch_k} of each unlabeled image), SGD lr {cfg.lr} "
                f"momentum {cfg.momentum} wd {cfg.weight_decay}, {cfg.warmup}-iteration warm-up then {cfg.lr_schedule}, "
                f"consistency ramp {cfg.consistency_rampup} iterations, evaluation every {cfg.eval_every} iterations "
                f"on the full test set, " + (f"weights: an EMA of decay {cfg.ema} (the raw weights' errors beside it "
                                             f"in summary.csv)" if cfg.ema and not raw_weights else
                                             "raw weights" + (f" (an EMA of decay {cfg.ema} evaluated beside them: "
                                                              "its errors in summary.csv)" if cfg.ema else "")))
    names = list(dict.fromkeys(r["algorithm"] for r in rows))
    args = f" --seeds {','.join(map(str, seeds))}" + (" --quick" if quick else "")
    args += f" --algorithms {','.join(names)}" if set(names) != set(DEFAULT_ALGORITHMS) else ""
    args += "".join(f" {k}={v}" for k, v in overrides.items()) + (" --tuned" if tuned else "")
    args += " --raw-weights" if raw_weights else ""
    text = [f"# Benchmark `{suite}`{' (quick: a smoke run, not a result)' if quick else ''}", "",
            f"Command: `metassl bench {suite}{args} --out {out}`  ", f"Date: {time.strftime('%Y-%m-%d')}  ",
            f"Machine: {machine}  ", f"Protocol: {protocol}. " + (
                "Each entry uses the values `metassl tune` chose on a validation split, which replace the lr and "
                "ramp above (tuning budget and values per entry: last section)" if tuned else
                "Each algorithm uses its paper's hyperparameters (docs/ALGORITHMS.md)") +
            ". No model selection on the test set.", "",
            "## Comparison (error %, mean ± std over seeds)", "", comparison_table(rows, suite), ""]
    for title, table in [("Ablation: meta-gradient x mixup (error %, mean ± std over seeds)", ablation_table(rows)),
                         ("Meta-gradient entries vs their twins without the correction (paired by seed)", twins_table(rows))]:
        text += [f"## {title}", "", table, ""] if table else []
    text += ["## Cost per run", "", cost_table(rows, TARGET_ERROR[suite]), ""]
    if (out / "plots" / "test_error.png").exists():
        text += ["## Curves (first seed)", "", "![test error](plots/test_error.png)", "", "![losses](plots/losses.png)", ""]
        if (out / "plots" / "time_to_error.png").exists():
            text += ["![test error vs training seconds and images seen](plots/time_to_error.png)", ""]
        if (out / "plots" / "pseudo_labels.png").exists():
            text += ["![pseudo-label quality](plots/pseudo_labels.png)", ""]
    if tuned:
        text += ["## Tuning (`metassl tune`: successive halving, scored on validation)", "", tuned_table(tuned), ""]
    atomic_write_text(out / "summary.md", "\n".join(text))
