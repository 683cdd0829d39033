#!/usr/bin/env python3
"""Tune every entry, then bench it with the chosen values, as a pool of processes sharing one GPU.

    python results/commands/tune_bench_parallel.py --suites fmnist-100,fmnist-1000 --entries supervised,fixmatch,metamixup \
        --workers 15 --deadline 540 --out runs/gpu [--long 3000 --long-entries supervised,fixmatch] [key=value ...]

Per (suite, entry), in the order given: `metassl tune` (tune.BUDGET, scored on validation), then one
`metassl bench --tuned-dir` process for its seeds (FULL budget, EMA weights evaluated beside the raw ones:
ema=--ema), then, with --long N, the same tuned values at N iterations (warm-up, ramp and evaluation
interval 10 % of N; ramps rescaled by the tune's fractions) into OUT/long-<suite>. Every process is an ordinary
command of the CLI, so each result is exactly what that command gives alone; a job starts once its tune is
done, tunes first. At --deadline seconds the running processes get SIGTERM (they checkpoint and stop) and
every re-run of this script resumes them. Last, per suite, `metassl bench` over the entries with every seed
finished writes the tables (it trains nothing then). Small models leave a GPU mostly idle, so ~1 process
per CPU core overlaps well (CUDA MPS is started where it works). On a 2-core CPU this gains nothing.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

CLI = [sys.executable, "-m", "metassl"]


def start_mps() -> None:
    """CUDA MPS lets kernels of different processes run side by side; skipped where it does not work."""
    if subprocess.run(["sh", "-c", "command -v nvidia-cuda-mps-control"], capture_output=True).returncode:
        return
    os.environ.setdefault("CUDA_MPS_PIPE_DIRECTORY", "/tmp/mps")
    os.environ.setdefault("CUDA_MPS_LOG_DIRECTORY", "/tmp/mps-log")
    for k in ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"):
        Path(os.environ[k]).mkdir(parents=True, exist_ok=True)
    subprocess.run(["nvidia-cuda-mps-control", "-d"], capture_output=True)
    probe = [sys.executable, "-c", "import torch; torch.zeros(1).cuda()"]
    if subprocess.run(probe, capture_output=True, timeout=60).returncode:
        subprocess.run(["nvidia-cuda-mps-control"], input=b"quit", capture_output=True)
        del os.environ["CUDA_MPS_PIPE_DIRECTORY"], os.environ["CUDA_MPS_LOG_DIRECTORY"]
        print("CUDA MPS unavailable: processes time-share the GPU", flush=True)


def long_budget(n: int) -> list[str]:
    tenth = max(1, n // 10)
    return [f"iterations={n}", f"eval_every={tenth}", f"checkpoint_every={tenth}", f"warmup={tenth}"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suites", required=True)
    p.add_argument("--entries", required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--workers", type=int, default=15)
    p.add_argument("--deadline", type=float, default=1e9, help="seconds; then SIGTERM and tables of what finished")
    p.add_argument("--out", default="runs/parallel")
    p.add_argument("--ema", default="0.99", help="EMA decay evaluated beside the raw weights in the benches")
    p.add_argument("--long", type=int, default=0, help="also bench the tuned values at this many iterations")
    p.add_argument("--long-entries", default="", help="entries of the long bench (default: all)")
    p.add_argument("--long-suites", default="", help="suites of the long bench (default: all)")
    p.add_argument("--long-ema", default="0.999")
    p.add_argument("--tune-flags", default="", help="e.g. '--trials 2 --iterations 20' (a smoke run)")
    p.add_argument("--bench-overrides", default="", help="key=value for the benches only (e.g. a smaller budget)")
    p.add_argument("overrides", nargs="*", help="key=value for every process (e.g. data_dir=..., threads=1)")
    a = p.parse_args()
    out, t0 = Path(a.out), time.time()
    tuned = out / "tuned"
    suites, entries = a.suites.split(","), a.entries.split(",")
    long_entries = a.long_entries.split(",") if a.long_entries else entries
    long_suites = a.long_suites.split(",") if a.long_suites else suites
    start_mps()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    # jobs in priority order: (name, needs, argv); a job starts when the job it needs has finished
    jobs: list[tuple[str, str | None, list[str]]] = []
    for e in entries:
        for suite in suites:
            jobs.append((f"tune-{suite}-{e}", None, ["tune", suite, "--algorithm", e, "--tuned-dir", str(tuned),
                                                     "--out", str(out / "tune" / suite / e), *a.tune_flags.split(), *a.overrides]))
    for e in entries:
        for suite in suites:
            jobs.append((f"bench-{suite}-{e}", f"tune-{suite}-{e}",
                         ["bench", suite, "--tuned-dir", str(tuned), "--seeds", a.seeds, "--algorithms", e,
                          "--out", str(out / f"bench-{suite}"), f"ema={a.ema}", *a.bench_overrides.split(),
                          *a.overrides]))
    if a.long:                                        # one process per seed: the long runs are the critical path
        for suite in long_suites:
            for e, seed in ((e, seed) for seed in a.seeds.split(",") for e in long_entries):
                jobs.append((f"long-{suite}-{e}-s{seed}", f"tune-{suite}-{e}",
                             ["bench", suite, "--tuned-dir", str(tuned), "--seeds", seed, "--algorithms", e,
                              "--out", str(out / f"long-{suite}"), f"ema={a.long_ema}", *a.bench_overrides.split(),
                              *long_budget(a.long), *a.overrides]))
    done: dict[str, int] = {}
    running: dict[str, subprocess.Popen] = {}
    while jobs or running:
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                done[name] = proc.returncode
                del running[name]
                print(f"{time.time() - t0:6.0f} s  {name}: exit {proc.returncode}", flush=True)
        if time.time() - t0 > a.deadline:
            break
        for job in list(jobs):
            name, needs, argv = job
            if len(running) >= a.workers:
                break
            if needs is not None and needs not in done:
                continue
            jobs.remove(job)
            if needs is not None and done[needs] != 0:
                done[name] = -1
                continue
            log = open(out / "logs" / f"{name}.log", "w")
            running[name] = subprocess.Popen(CLI + argv, stdout=log, stderr=subprocess.STDOUT)
        time.sleep(1)
    for proc in running.values():                     # the deadline: checkpoint and stop
        proc.send_signal(signal.SIGTERM)
    for proc in running.values():
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"{time.time() - t0:.0f} s: {sum(v == 0 for v in done.values())} jobs done, "
          f"{len(running)} stopped at the deadline, {len(jobs)} not started", flush=True)
    seeds, tables = a.seeds.split(","), []
    for suite in suites:                              # the tables over what finished (nothing is trained here)
        for folder, names, extra in ((f"bench-{suite}", entries, [f"ema={a.ema}", *a.bench_overrides.split()]),
                                     (f"long-{suite}", long_entries, [f"ema={a.long_ema}", *a.bench_overrides.split(),
                                                                      *long_budget(a.long)])):
            ok = [e for e in names if all((out / folder / f"{e}-s{s}" / "results.json").exists() for s in seeds)]
            if ok:
                tables.append(subprocess.Popen(CLI + ["bench", suite, "--tuned-dir", str(tuned), "--seeds", a.seeds,
                                                      "--algorithms", ",".join(ok), "--out", str(out / folder),
                                                      *extra, *a.overrides], stdout=subprocess.DEVNULL))
    return max([t.wait() for t in tables], default=0)


if __name__ == "__main__":
    sys.exit(main())
