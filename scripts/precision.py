"""Does amp=true (bf16 autocast on a CPU with bf16 units) change what a run learns, and what does it buy in minutes?

    python scripts/precision.py budget fp32 & python scripts/precision.py budget amp; wait       # side by side
    python scripts/precision.py iterations fp32 & python scripts/precision.py iterations amp; wait
    python scripts/precision.py report                                  # results/precision/summary.md

budget: `metassl compare` (the labels alone and the default algorithm, time_limit=3m, seeds 0 and 1) on the
screen's fmnist-100 and fmnist-1000 tasks (docs/results/DEFAULT.md), in fp32 or with amp. iterations: the job
`make run` ships (--preset fmnist-1000, 2000 iterations), seeds 0 and 1, in fp32 or with amp: the same
iterations, so any difference in error is the precision's. One thread per run; the fp32 and amp processes run
side by side on the two cores, so each pair shares the machine's conditions. Finished runs are skipped.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

OUT = Path("results/precision")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from screen import TASKS  # noqa: E402

COMMON = ["device=cpu", "threads=1"]
SEEDS = [0, 1]


def run(stage: str, precision: str) -> None:
    from metassl.algorithms import build_config
    from metassl.data import load_dataset
    from metassl.experiments.compare import run_compare
    from metassl.experiments.suites import run_one

    amp = f"amp={'true' if precision == 'amp' else 'false'}"
    if stage == "budget":
        for task in ("fmnist-100", "fmnist-1000"):
            run_compare([*TASKS[task], *COMMON, "time_limit=3m", amp], seeds=SEEDS, out=OUT / stage / precision / task)
        return
    for seed in SEEDS:
        cfg = build_config("fmnist-1000", None, [*COMMON, amp, f"seed={seed}", f"split_seed={seed}"])
        res, done = run_one(cfg, OUT / stage / precision / f"{cfg.algorithm}-s{seed}",
                            load_dataset(cfg.dataset), quiet=True)
        print(f"{precision} seed {seed}: {done}, test error {res['test_error']:.2f}%, {res['train_seconds']:.0f} s",
              file=sys.stderr)


def fp32_test_errors() -> dict[str, float]:
    """Test error of every amp run's final weights evaluated in fp32 (results/precision/fp32-evaluations.json).
    The runs of 2026-12-07 came from a commit that also evaluated in bf16; evaluation is fp32 since, so every
    error in the summary is an fp32 evaluation."""
    from metassl.inference.evaluate import evaluate_run

    path = OUT / "fp32-evaluations.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    for f in sorted(OUT.glob("*/amp/**/results.json")):
        key = str(f.parent.relative_to(OUT))
        if key not in done and json.loads(f.read_text()).get("precision") == "bf16 autocast":
            done[key] = round(evaluate_run(f.parent, "cpu")["test_error"], 2)
            path.write_text(json.dumps(done, indent=1))
    return done


def report() -> str:
    """summary.md: per task and algorithm, fp32 against amp (test and validation error, iterations, seconds)."""
    fixed = fp32_test_errors()
    lines = ["# fp32 against amp (bf16 autocast)", "",
             "Test errors are fp32 evaluations of the final weights; validation errors of the amp runs were measured "
             "under bf16.", "",
             "| stage | task | algorithm | precision | test error % | val error % | iterations | train s |",
             "|---|---|---|---|---|---|---|---|"]

    def mean(rows: list[dict], k: str, d: int = 2) -> str:
        v = [r[k] for r in rows if r.get(k) is not None]
        return f"{statistics.mean(v):.{d}f}" + (f" ± {statistics.stdev(v):.{d}f}" if len(v) > 1 else "") if v else "-"

    for task in ("fmnist-100", "fmnist-1000"):
        for p in ("fp32", "amp"):
            f = OUT / "budget" / p / task / "compare.json"
            rows = json.loads(f.read_text())["rows"] if f.exists() else []
            for r in rows:
                r["test_error"] = fixed.get(f"budget/{p}/{task}/{r['algorithm']}-s{r['seed']}", r["test_error"])
            for name in dict.fromkeys(r["algorithm"] for r in rows):
                mine = [r for r in rows if r["algorithm"] == name]
                lines.append(f"| budget 3m | {task} | {name} | {p} | {mean(mine, 'test_error')} | "
                             f"{mean(mine, 'val_error')} | {mean(mine, 'iterations', 0)} | {mean(mine, 'train_seconds', 0)} |")
    for p in ("fp32", "amp"):
        rows = [{**json.loads(f.read_text()), "test_error": fixed.get(str(f.parent.relative_to(OUT)),
                                                                      json.loads(f.read_text())["test_error"])}
                for f in sorted((OUT / "iterations" / p).glob("*/results.json"))]
        if rows:
            lines.append(f"| 2000 it | fmnist-1000 preset | {rows[0]['algorithm']} | {p} | {mean(rows, 'test_error')} | "
                         f"{mean(rows, 'val_error')} | {mean(rows, 'iterations', 0)} | {mean(rows, 'train_seconds', 0)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=["budget", "iterations", "report"])
    p.add_argument("precision", nargs="?", choices=["fp32", "amp"])
    a = p.parse_args()
    if a.stage == "report":
        (OUT / "summary.md").write_text(report())
        print(report())
    elif a.precision is None:
        p.error("budget and iterations need a precision: fp32 or amp")
    else:
        run(a.stage, a.precision)


if __name__ == "__main__":
    main()
