"""The 3800-iteration CPU suites (BENCHMARKS 1b, 1c) with the label bank beside their committed entries.

    python results/bank-suites/summary.py > results/bank-suites/summary.md

Reads the committed rows of results/cpu-<suite>-3800it-recipe/summary.csv (2 threads, 2026-11-26) and the
runs of results/bank-suites/<suite>/<entry>-s<seed>/ (results/README.md: metaselftrain for seeds 0-2, supervised for
seed 0 again at one thread, 2026-12-03), and prints one table per suite and the paired differences by seed.
"""
from __future__ import annotations

import csv
import statistics
import json
from pathlib import Path

from metassl.experiments.bench import tail_change

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent
ORDER = ["supervised", "supervised (1 thread, 2026-12-03)", "fixmatch", "metafixmatch-norm", "metaselftrain",
         "fully-supervised"]


def rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open())) if path.exists() else []


def new_rows(suite: str) -> list[dict[str, str]]:
    out = []
    for res in sorted((HERE / suite).glob("*-s*/results.json")):
        r = json.loads(res.read_text())
        name = r["algorithm"] + (" (1 thread, 2026-12-03)" if r["algorithm"] == "supervised" else "")
        out.append({"algorithm": name, "seed": str(r["seed"]), "test_error": str(r["test_error"]),
                    "test_error_median_last5": str(r["test_error_median_last5"]),
                    "tail_change": str(tail_change(res.parent, r["iterations"])), "train_seconds": str(r["train_seconds"]),
                    "wall_seconds": str(r["wall_seconds"])})
    return out


def mean_std(v: list[float]) -> str:
    return f"{v[0]:.2f}" if len(v) == 1 else f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}"


for suite in ("fmnist-1000", "fmnist-100"):
    table = rows(RESULTS / f"cpu-{suite}-3800it-recipe" / "summary.csv") + new_rows(suite)
    err = {(r["algorithm"], int(r["seed"])): float(r["test_error"]) for r in table}
    print(f"## {suite}, 3800 iterations (the first 1900 labeled-only)\n")
    print("| entry | seeds | test error % (final) | median of last 5 % | change over the last 20 % | training s |")
    print("|---|---|---|---|---|---|")
    for name in ORDER:
        rs = [r for r in table if r["algorithm"] == name]
        if rs:
            tails = [float(r["tail_change"]) for r in rs if r["tail_change"]]
            print(f"| {name} | {','.join(r['seed'] for r in rs)} | {mean_std([float(r['test_error']) for r in rs])} | "
                  f"{mean_std([float(r['test_error_median_last5']) for r in rs])} | "
                  f"{mean_std(tails) if tails else '-'} | {statistics.mean(float(r['train_seconds'] or r['wall_seconds']) for r in rs):.0f} |")
    print()
    for other in ("supervised", "fixmatch"):
        seeds = sorted(s for (n, s) in err if n == "metaselftrain" and (other, s) in err)
        if seeds:
            d = [err["metaselftrain", s] - err[other, s] for s in seeds]
            print(f"metaselftrain - {other}, seeds {seeds}: " + " / ".join(f"{x:+.2f}" for x in d)
                  + f" (mean {statistics.mean(d):+.2f}, lower on {sum(x < 0 for x in d)}/{len(d)})  ")
    print()
