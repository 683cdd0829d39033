#!/usr/bin/env bash
# metaselftrain in the 3800-iteration CPU suites (BENCHMARKS 1b, 1c), seed-major so both suites are paired by seed
# as runs land; one thread. Run on 2026-12-03 from a worktree of 032b723 (SRC=/tmp/before/src); the restructure after it
# changes no number (docs/results/structure-parity/), so SRC may be this checkout's src.
cd "$(git rev-parse --show-toplevel)"
SRC=${SRC:-src}
while pgrep -f "bank-confirm/confirm.sh" >/dev/null; do sleep 20; done
for s in 0 1 2; do
  for suite in fmnist-1000 fmnist-100; do
    PYTHONPATH=$SRC nice -n -15 .venv/bin/python -m metassl bench $suite --seeds $s --algorithms metaselftrain \
      --out runs/bench/cpu-$suite-3800it iterations=3800 labeled_warmup=1900 eval_every=380 checkpoint_every=380 \
      warmup=200 consistency_rampup=190 threads=1
  done
done
