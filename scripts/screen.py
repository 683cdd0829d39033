"""Which algorithm should be the default? Successive halving at equal wall-clock budgets, choices on validation.

    python scripts/screen.py digits                                    # results/screen/digits16.npz from scikit-learn
    python scripts/screen.py short --tasks fmnist-40,fmnist-1000       # every candidate, 90 s, seed 0
    python scripts/screen.py long --tasks fmnist-40,fmnist-1000        # the short stage's best 3 + supervised, 3 min, seeds 0,1
    python scripts/screen.py report                                    # results/screen/summary.md

Each stage is `metassl compare` on each task (same time_limit for every algorithm, seeds paired), so a killed stage
resumes by running it again. Candidates rank by their final validation error (num_val images held out of
training, never the test set); the finalists are the 3 best mean ranks over the tasks at the short budget; the
default is the best mean rank at the long one. Runs use one thread each: two stages can run side by side on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from metassl.experiments.compare import run_compare

OUT = Path("results/screen")
CANDIDATES = ["fixmatch", "flexmatch", "freematch", "softmatch", "selftrain", "metaselftrain", "metaflexmatch",
              "metamixup"]                                   # and supervised, the baseline of every compare
TASKS = {"fmnist-40": ["dataset=fashion-mnist", "num_labels=40", "num_val=500"],
         "fmnist-100": ["dataset=fashion-mnist", "num_labels=100", "num_val=500"],
         "fmnist-1000": ["dataset=fashion-mnist", "num_labels=1000", "num_val=500"],
         "digits": [f"dataset={OUT}/digits16.npz", "num_labels=50", "num_val=100"]}
STAGES = {"short": ("90s", [0]), "long": ("3m", [0, 1])}
COMMON = ["device=cpu", "threads=1"]


def make_digits(path: Path) -> None:
    """scikit-learn's 1797 handwritten digits (8x8, 0..16) as a user's .npz: 16x16 uint8, a fixed 20 % test part."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (np.kron(d.images, np.ones((2, 2))) * (255 / 16)).round().astype(np.uint8)      # (1797, 16, 16)
    order = np.random.default_rng(0).permutation(len(x))
    test, train = order[:360], order[360:]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x[train], y=d.target[train], x_test=x[test], y_test=d.target[test],
             classes=np.array([str(k) for k in range(10)]))


def rows(stage: str, task: str) -> list[dict]:
    f = OUT / stage / task / "compare.json"
    return json.loads(f.read_text())["rows"] if f.exists() else []


def mean_ranks(stage: str, tasks: list[str], names: list[str]) -> dict[str, float]:
    """Each name's rank by mean validation error on each task (1 = lowest, ties share the mean of their ranks; a run
    that did not fit ranks last), averaged over the tasks."""
    ranks: dict[str, list[float]] = {n: [] for n in names}
    for task in tasks:
        val = {n: [r["val_error"] for r in rows(stage, task) if r["algorithm"] == n and r["val_error"] is not None]
               for n in names}
        score = {n: statistics.mean(v) if v else float("inf") for n, v in val.items()}
        for n in names:
            ranks[n].append(sum(s < score[n] for s in score.values()) + (sum(s == score[n] for s in score.values()) + 1) / 2)
    return {n: statistics.mean(r) for n, r in ranks.items() if r}


def finalists() -> list[str]:
    """The 3 best mean ranks at the short budget besides supervised (the baseline of every compare), with any tie
    at the cut."""
    ranks = mean_ranks("short", list(TASKS), ["supervised", *CANDIDATES])
    order = [n for n in sorted(ranks, key=ranks.get) if n != "supervised"]
    return [n for n in order if ranks[n] <= ranks[order[2]]]


def run_stage(stage: str, tasks: list[str]) -> None:
    budget, seeds = STAGES[stage]
    names = CANDIDATES if stage == "short" else finalists()
    for task in tasks:
        run_compare([*TASKS[task], *COMMON, f"time_limit={budget}"], algorithms=names, seeds=seeds,
                    out=OUT / stage / task)


def report() -> str:
    """summary.md: per stage, each task's validation and test error per algorithm, the mean ranks, the choice."""
    lines = ["# Default-algorithm screen", ""]
    for stage, (budget, seeds) in STAGES.items():
        tasks = [t for t in TASKS if rows(stage, t)]
        if not tasks:
            continue
        names = list(dict.fromkeys(r["algorithm"] for t in tasks for r in rows(stage, t)))
        ranks = mean_ranks(stage, tasks, names)
        lines += [f"## {stage}: time_limit={budget}, seeds {seeds}, one thread per run", "",
                  "| algorithm | mean rank (validation) | " + " | ".join(f"{t} val / test %" for t in tasks) + " |",
                  "|---|---|" + "---|" * len(tasks)]
        for n in sorted(names, key=lambda n: ranks.get(n, 99)):
            cells = []
            for t in tasks:
                mine = [r for r in rows(stage, t) if r["algorithm"] == n and r["test_error"] is not None]
                cells.append(f"{statistics.mean(r['val_error'] for r in mine):.2f} / "
                             f"{statistics.mean(r['test_error'] for r in mine):.2f}" if mine else "did not fit")
            lines.append(f"| {n} | {ranks.get(n, float('nan')):.2f} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stage", choices=["digits", "short", "long", "report"])
    p.add_argument("--tasks", default=",".join(TASKS))
    args = p.parse_args()
    if args.stage == "digits":
        make_digits(OUT / "digits16.npz")
    elif args.stage == "report":
        (OUT / "summary.md").write_text(report())
        print(report())
    else:
        run_stage(args.stage, [t for t in args.tasks.split(",") if t])


if __name__ == "__main__":
    sys.exit(main())
