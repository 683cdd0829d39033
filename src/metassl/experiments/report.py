"""The benchmark's tables: summary.csv and summary.md of a bench directory, from its rows (one per run)."""
from __future__ import annotations

import csv
import io
import statistics
import time
from pathlib import Path
from typing import Any

from ..config import Config
from ..run.files import atomic_write_text
from ..run.rundir import RunDir
from ..schedule import images_seen
from .suites import ABLATION, COMPARISON, DEFAULT_ALGORITHMS, ENTRIES, META_TWINS, TAIL, TARGET_ERROR
from .tune import tuned_table

WEIGHT_COLUMNS = ("val_error", "val_error_raw", "test_error_raw", "val_error_ema", "test_error_ema")  # "" if absent
CSV_COLUMNS = ("algorithm", "seed", "num_labels", "test_error", "test_error_median_last5", "tail_change", "wall_seconds",
               "images_per_second", "train_seconds", "seconds_to_target", "changed_better", "changed_worse",
               *WEIGHT_COLUMNS)

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
    variants = {n: f"`{n}` (`{ENTRIES[n][0]}`, " + ", ".join(f"{k}={v}" for k, v in ENTRIES[n][1].items()) + ")"
                for n in final if n in ENTRIES}               # rows no table above names, after the paper's
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
        first = next(RunDir(d).read_results() for d in sorted(out.iterdir()) if RunDir(d).finished())
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
