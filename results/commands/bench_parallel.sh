#!/usr/bin/env bash
# Run one `metassl bench` suite as several processes sharing one GPU, then write the combined tables.
#
#   results/commands/bench_parallel.sh SUITE "GROUP GROUP ..." [key=value ...]
#   results/commands/bench_parallel.sh fmnist-1000 "metamixup,supervised,pimodel meta,fully-supervised,pseudolabel \
#       fixmatch,meanteacher,vat-ent mixup,neither,vat metafixmatch,mixmatch" iterations=3000 eval_every=300 \
#       checkpoint_every=300 warmup=300 consistency_rampup=300
#
# One process per (group, seed), seeds 0,1,2 (SEEDS=... to change), all writing into OUT (default
# runs/bench/SUITE-parallel). Each is an ordinary `metassl bench`, so the protocol is exactly the
# sequential one; the last command lists every entry and seed, finds every run finished, and only writes
# summary.csv / summary.md / the curves. Small models leave a GPU mostly idle (launch-bound steps), so
# runs overlap well; with CUDA MPS (started here when `nvidia-cuda-mps-control` exists and works)
# kernels from different processes also run side by side. Measured on one H100: the 42 runs of
# fmnist-1000 at 3000 iterations in 3.5 minutes as 15 processes (docs/BENCHMARKS.md). Wall seconds and
# images/s in the cost table are then per process under sharing, not a single run's speed.
# On a 2-core CPU machine this gains nothing (measured): run `metassl bench` directly there.
set -euo pipefail
SUITE=$1; GROUPS_=$2; shift 2
SEEDS=${SEEDS:-0,1,2}; OUT=${OUT:-runs/bench/$SUITE-parallel}
METASSL=${METASSL:-metassl}
if command -v nvidia-cuda-mps-control >/dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=${CUDA_MPS_PIPE_DIRECTORY:-/tmp/mps} CUDA_MPS_LOG_DIRECTORY=${CUDA_MPS_LOG_DIRECTORY:-/tmp/mps-log}
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  nvidia-cuda-mps-control -d 2>/dev/null || true     # fails harmlessly where the daemon already runs
  if ! timeout 60 python3 -c "import torch; torch.zeros(1).cuda()" 2>/dev/null; then
    echo quit | nvidia-cuda-mps-control 2>/dev/null || true
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY; echo "CUDA MPS unavailable: processes time-share the GPU" >&2
  fi
fi
mkdir -p "$OUT/logs"
pids=()
for seed in ${SEEDS//,/ }; do
  for group in $GROUPS_; do
    $METASSL bench "$SUITE" --seeds "$seed" --algorithms "$group" --out "$OUT" threads=1 "$@" \
      > "$OUT/logs/s$seed-${group%%,*}.log" 2>&1 &
    pids+=($!)
  done
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
[ $status = 0 ] || { echo "a bench process failed: see $OUT/logs (re-running this script resumes)" >&2; exit 1; }
all=$(echo $GROUPS_ | tr ' ' ',')
$METASSL bench "$SUITE" --seeds "$SEEDS" --algorithms "$all" --out "$OUT" threads=1 "$@"
