"""Did my unlabeled images help? The labels alone against SSL algorithms on the user's data, same wall-clock budget.

    metassl compare dataset=mydata.npz num_labels=200 time_limit=2m
    metassl compare dataset=folder data_dir=photos image_size=32 num_labels=100 time_limit=5m --algorithms fixmatch,flexmatch

Every algorithm trains under the same `time_limit` (each fits its own iteration count to it), seeds paired: seed s
draws the same labeled split for every algorithm. Test error is the final one on `x_test` (or the held-out part).
Runs go to OUT/<algorithm>-s<seed>/ (a finished run is skipped, an interrupted one resumed: re-run the command to
finish a killed compare); OUT/compare.csv, compare.json and plots/ hold the table, the verdict and the curves.
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import Config
from ..algorithms import build_config
from ..data import load_dataset
from ..errors import UserError
from ..run.files import atomic_write_text
from .suites import run_one

BASELINE = "supervised"
COLUMNS = ("algorithm", "seed", "test_error", "val_error", "iterations", "train_seconds", "wall_seconds",
           "images_per_second", "note")


def verdict(rows: list[dict[str, Any]], algorithm: str) -> str:
    """One line: did `algorithm` lower test error against the labels alone, by how much, on how many paired seeds."""
    base = {r["seed"]: r["test_error"] for r in rows if r["algorithm"] == BASELINE and r["test_error"] is not None}
    diffs = [base[r["seed"]] - r["test_error"] for r in rows
             if r["algorithm"] == algorithm and r["seed"] in base and r["test_error"] is not None]
    if not diffs:
        notes = [r["note"] for r in rows if r["algorithm"] == algorithm and r.get("note")]
        return f"{algorithm}: " + (notes[0] if notes else "no seed paired with the labels alone yet")
    gain, wins, n = statistics.mean(diffs), sum(d > 0 for d in diffs), len(diffs)
    if gain > 0 and wins == n:
        return (f"{algorithm}: the unlabeled images lowered test error by {gain:.2f} points "
                f"on {wins} of {n} seed{'s' * (n > 1)}")
    if all(d == 0 for d in diffs):
        return f"{algorithm}: no difference here: the same test error as the labels alone on {n} seed{'s' * (n > 1)}"
    if gain > 0:
        return (f"{algorithm}: the unlabeled images lowered test error by {gain:.2f} points on average, "
                f"but on only {wins} of {n} seeds: not a clear gain here")
    return (f"{algorithm}: did not help here: test error {-gain:.2f} points higher than the labels alone "
            f"(lower on {wins} of {n} seed{'s' * (n > 1)})")


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per algorithm, mean ± sd over seeds."""
    def ms(v: list[float], digits: int = 2) -> str:
        return f"{statistics.mean(v):.{digits}f}" + (f" ± {statistics.stdev(v):.{digits}f}" if len(v) > 1 else "")

    lines = ["| algorithm | test error % | iterations | train s | images/s | seeds |", "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["algorithm"] for r in rows):
        mine = [r for r in rows if r["algorithm"] == name and r["test_error"] is not None]
        if not mine:
            lines.append(f"| {name} | did not run: see its note | - | - | - | 0 |")
            continue
        lines.append(f"| {name} | {ms([r['test_error'] for r in mine])} | {ms([r['iterations'] for r in mine], 0)} | "
                     f"{ms([r['train_seconds'] for r in mine], 0)} | {ms([r['images_per_second'] for r in mine], 0)} | "
                     f"{len(mine)} |")
    return "\n".join(lines)


def run_compare(overrides: list[str], *, algorithms: list[str] | None = None, seeds: list[int] = (0, 1, 2),
                out: str | Path | None = None, quiet: bool = True,
                log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> dict[str, Any]:
    """Train the labels alone and each algorithm (default: the default algorithm) under one time_limit, paired seeds;
    write compare.csv, compare.json and plots/ into `out`; returns the JSON record."""
    if not seeds:
        raise UserError("no seeds given; e.g. --seeds 0,1,2")
    if not any(o.split("=", 1)[0].strip() == "time_limit" for o in overrides):
        overrides = [*overrides, "time_limit=2m"]
        log("metassl compare: no time_limit given; every run gets time_limit=2m")
    if any(o.split("=", 1)[0].strip() in ("algorithm", "seed", "split_seed") for o in overrides):
        raise UserError("compare sets algorithm, seed and split_seed itself; use --algorithms and --seeds")
    base = build_config(overrides=overrides)
    names = [BASELINE] + [a for a in (algorithms or [Config.algorithm]) if a != BASELINE]
    configs = {(n, s): build_config(overrides=[*overrides, f"algorithm={n}", f"seed={s}", f"split_seed={s}"])
               for s in seeds for n in names}                               # every name and value checked first
    out = Path(out) if out else Path("runs") / "compare" / (
        f"{Path(base.dataset).stem if base.dataset.endswith('.npz') else base.dataset}-{base.num_labels}"
        f"-{base.time_limit:g}s")
    out.mkdir(parents=True, exist_ok=True)
    log(f"metassl compare: {len(names)} algorithms x {len(seeds)} seeds x {base.time_limit:g} s = about "
        f"{len(configs) * base.time_limit / 60:.0f} min -> {out}")
    data = load_dataset(base.dataset, base.data_dir or None, base.image_size or None)
    rows = []
    for (name, seed), cfg in configs.items():
        try:
            res, done = run_one(cfg, out / f"{name}-s{seed}", data, quiet)
        except UserError as e:                  # e.g. the budget affords no run of it: a row that says why
            rows.append({"algorithm": name, "seed": seed, **{k: None for k in COLUMNS[2:]}, "note": str(e)})
            log(f"{name} seed {seed}: did not run: {e}")
        else:
            rows.append({"algorithm": name, "seed": seed, **{k: res.get(k) for k in COLUMNS[2:]}})
            log(f"{name} seed {seed}: {done}, test error {res['test_error']:.2f}%, {res['iterations']} iterations")
        record = write(out, rows, names, overrides, seeds)
    try:
        from ..diagnostics.plot import plot_runs
        first = [n for n, s in configs if s == seeds[0]]
        plot_runs([out / f"{n}-s{seeds[0]}" for n in first], out / "plots", labels=first)
    except UserError as e:                       # e.g. matplotlib missing: tables only
        log(f"no plots: {e}")
    return record


def write(out: Path, rows: list[dict[str, Any]], names: list[str], overrides: list[str], seeds: list[int]) -> dict[str, Any]:
    """compare.csv (one row per run) and compare.json (rows, table, verdicts, command, machine, date)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "compare.csv", buf.getvalue())
    record = {"command": "metassl compare " + " ".join(overrides) + f" --algorithms {','.join(names[1:])} "
                         f"--seeds {','.join(map(str, seeds))}",
              "machine": f"{platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__}",
              "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "rows": rows, "table": table(rows), "verdicts": [verdict(rows, n) for n in names[1:]]}
    atomic_write_text(out / "compare.json", json.dumps(record, indent=1))
    return record
