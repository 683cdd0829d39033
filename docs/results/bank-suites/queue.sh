#!/usr/bin/env bash
# metaselftrain in the 3800-iteration CPU suites (BENCHMARKS 1b, 1c), seed-major so both suites are paired by seed
# as runs land; from the pre-refactor snapshot /tmp/before (numerics identical), one thread.
cd /work/main
while pgrep -f "bank-confirm/confirm.sh" >/dev/null; do sleep 20; done
for s in 0 1 2; do
  for suite in fmnist-1000 fmnist-100; do
    PYTHONPATH=/tmp/before/src nice -n -15 .venv/bin/python -m metassl bench $suite --seeds $s --algorithms metaselftrain \
      --out runs/bench/cpu-$suite-3800it iterations=3800 labeled_warmup=1900 eval_every=380 checkpoint_every=380 \
      warmup=200 consistency_rampup=190 threads=1
  done
done
