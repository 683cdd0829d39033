#!/usr/bin/env bash
# What waits for a GPU, as one prepared device call (device time is scarce: run this first, then look):
#   1. issue 11, item 13: the paper's presets on full-size CIFAR-10 / SVHN files for 300 iterations;
#   2. issues 12/13: fmnist-1000 at 3000 iterations with the committed tuned values (src/metassl/tuned/), every
#      default entry and the meta variants, 3 seeds (the fmnist-100 column of docs/BENCHMARKS.md 5 exists);
#      fmnist-100 at 3000 iterations for the variants that column lacks;
#   3. issue 12: the make-run recipe (half the run labeled-only) at 3800 iterations for the entries a converged
#      CPU suite would hold (about 2.4 hours of the 2-core CPU for 3 seeds; docs/PERFORMANCE.md), to see whether
#      their curves are flat (bench's tail_change) before spending that CPU time.
# All run at once. At DEADLINE seconds every run gets SIGTERM (it checkpoints; re-running this script resumes
# and skips finished runs); then the small outputs (results, metrics, configs, tables, logs) are packed into
# $OUT/gpu-pending.tgz.
#
#   run(command="bash scripts/gpu_pending.sh", carry=[".data"], timeout_s=600)   # .data/fashion-mnist: the IDX files
#   ITERS=20 FULLSIZE_ITERS=0 DEVICE=cpu SEEDS=0 bash scripts/gpu_pending.sh     # a smoke run of the plumbing
set -uo pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 METASSL="python3 -m metassl"
W=${W:-runs/gpu-pending}; ITERS=${ITERS:-3000}; FULLSIZE_ITERS=${FULLSIZE_ITERS:-300}; DEVICE=${DEVICE:-cuda}
DATA=${DATA:-$PWD/.data/fashion-mnist}; OUT=${OUT:-$W}; DEADLINE=${DEADLINE:-530}
export METASSL_DATA=$DATA
mkdir -p "$W" "$OUT"; OUT=$(realpath "$OUT")
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$W/device.txt" 2>&1 || echo cpu > "$W/device.txt"
( sleep "$DEADLINE"; pkill -TERM -f "metassl (train|bench) .*$W/" ) & watchdog=$!   # only this script's runs
pids=()
if [ "$FULLSIZE_ITERS" -gt 0 ]; then
  python3 scripts/fullsize_files.py /tmp/fullsize --src "$DATA" --train "$FULLSIZE_ITERS" --device "$DEVICE" --nice 0 \
    --threads 0 --runs "$W/fullsize" --json "$W/fullsize-it$FULLSIZE_ITERS.json" > "$W/fullsize.log" 2>&1 & pids+=($!)
fi
T=$(( ITERS / 10 ))
LONG="iterations=$ITERS eval_every=$T checkpoint_every=$T warmup=$T num_val=1000 ema=0.999 device=$DEVICE"
OUT=$W/fmnist-1000-${ITERS}it-tuned scripts/bench_parallel.sh fmnist-1000 \
  "supervised,fully-supervised,pimodel meanteacher,pseudolabel,mixmatch fixmatch,metafixmatch-plain flexmatch,metaflexmatch-plain freematch,softmatch,metafixmatch neither,meta mixup,metamixup metamixup-norm,metamixup-holdout" \
  --tuned $LONG > "$W/fmnist-1000.log" 2>&1 & pids+=($!)
OUT=$W/fmnist-100-${ITERS}it-tuned scripts/bench_parallel.sh fmnist-100 \
  "metamixup-norm,metamixup-holdout metafixmatch-plain,metaflexmatch-plain,flexmatch" \
  --tuned $LONG > "$W/fmnist-100.log" 2>&1 & pids+=($!)
# the recipe of the fmnist-1000 preset (make run), scaled: ITERS=3000 gives 3800 iterations, the first 1900 labeled-only
R=$(( ITERS * 38 / 300 ))
OUT=$W/fmnist-1000-recipe scripts/bench_parallel.sh fmnist-1000 "supervised,fully-supervised fixmatch metafixmatch-plain metafixmatch-norm metamixup" \
  iterations=$(( R * 10 )) labeled_warmup=$(( R * 5 )) eval_every=$R checkpoint_every=$R warmup=$(( ITERS / 15 )) \
  consistency_rampup=$(( R / 2 )) device=$DEVICE > "$W/fmnist-1000-recipe.log" 2>&1 & pids+=($!)
for p in "${pids[@]}"; do wait "$p"; done
kill "$watchdog" 2>/dev/null
cd "$W" && find . \( -name results.json -o -name metrics.jsonl -o -name config.json -o -name 'summary.*' \
  -o -name '*.log' -o -name '*.txt' -o -name 'fullsize-it*.json' -o -name '*.png' \) -print0 \
  | tar -czf "$OUT/gpu-pending.tgz" --null -T - && ls -la "$OUT/gpu-pending.tgz"
