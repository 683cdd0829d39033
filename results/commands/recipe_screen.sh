#!/usr/bin/env bash
# The time-to-accuracy recipe screen of docs/PERFORMANCE.md: paired runs on seed 0's split,
# every choice read off the validation split (num_val=5000 held out of the training set), never the test set.
#
#   results/commands/recipe_screen.sh [STAGE] [NPAR]     # STAGE: s1 | s2 | s3 | s4 | all (default) | pairs; NPAR runs at once (default 2)
#
# s1: the shared recipe at 1200 metamixup iterations: the preset as it was (c0) vs EMA evaluation (c1).
# s2: a 10-minute budget on this 2-core CPU (iteration counts from the measured step costs, see the doc):
#     supervised for the whole budget vs metamixup after a labeled-only warm-up of half the run, with the
#     head-only meta pass (meta_params=head) and with the full one.
# s3: s2's full-pass run with the fixed-length meta step (meta_step=normalised, rho as tuned for metamixup-norm
#     on fmnist-1000: src/metassl/experiments/tuned/), the variant that beat its twin in both H200 suites; and `meta`
#     (the correction without mixup) at the same budget, to see what mixup costs at this length.
# s4: the FixMatch family with the same recipe and length (FixMatch's and MetaFixMatch's paper defaults,
#     meta_threshold_on=plain, the variant that beat FixMatch on both suites): the entries of the 2.5-hour CPU
#     suite docs/PERFORMANCE.md defines, screened on one split before that suite is run.
# pairs: is `make run` below supervised for the same minutes (paired, 3 seeds)? the preset as it
#     is (no validation split) and supervised for 4660 iterations (the make run's 508 training seconds at the
#     idle step costs, docs/PERFORMANCE.md), on each of SEEDS (seed and split seed alike; default "1 2", seed 0
#     being results/make-run{,-supervised}). Not part of `all`.
# s5: is the labeled-only warm-up, chosen at 1000 labels, also right at 100 (num_labels=100, the bench's
#     fmnist-100)? FixMatch with s4's schedule (1900 labeled-only + 1900 FixMatch iterations) against FixMatch
#     from the first iteration for the same idle training seconds (2480 iterations = 1900 x (75.5 + 248) / 248,
#     the bench-step costs in ms of docs/BENCHMARKS.md 1b), and supervised for the whole 3800. Not part of `all`.
# Each run is an ordinary `metassl train` into runs/recipe/NAME (one thread each, NPAR at once); a finished
# run (results.json) is skipped, so re-running the script finishes the screen.
set -euo pipefail
STAGE=${1:-all}; NPAR=${2:-2}; OUT=${OUT:-runs/recipe}; METASSL=${METASSL:-metassl}
OLD="iterations=1200 consistency_rampup=120 eval_every=300 checkpoint_every=1200 meta_params=all"   # s1 (1400-it preset of the time)
LW="iterations=3800 labeled_warmup=1900 consistency_rampup=190 eval_every=475 checkpoint_every=475"
jobs=()
[[ $STAGE == s1 || $STAGE == all ]] && jobs+=("s1-c0 $OLD warmup=120 labeled_warmup=0" "s1-c1 $OLD warmup=120 labeled_warmup=0 ema=0.99")
[[ $STAGE == s2 || $STAGE == all ]] && jobs+=(
  "s2-sup algorithm=supervised iterations=6400 eval_every=800 checkpoint_every=800 labeled_warmup=0"
  "s2-lw50-head $LW meta_params=head"
  "s2-lw50-all $LW meta_params=all")
[[ $STAGE == s3 || $STAGE == all ]] && jobs+=(
  "s3-lw50-norm $LW meta_params=all meta_step=normalised meta_rho=0.273"
  "s3-lw50-meta-only $LW meta_params=all algorithm=meta")
[[ $STAGE == s4 || $STAGE == all ]] && jobs+=(
  "s4-lw50-fixmatch $LW algorithm=fixmatch"
  "s4-lw50-metafixmatch-plain $LW algorithm=metafixmatch meta_threshold_on=plain")
[[ $STAGE == s5 ]] && jobs+=(
  "s5-100-lw50-fixmatch num_labels=100 $LW algorithm=fixmatch"
  "s5-100-lw0-fixmatch num_labels=100 algorithm=fixmatch iterations=2480 labeled_warmup=0 consistency_rampup=124 eval_every=310 checkpoint_every=310"
  "s5-100-sup num_labels=100 algorithm=supervised iterations=3800 labeled_warmup=0 eval_every=475 checkpoint_every=475")
if [[ $STAGE == pairs ]]; then
  for s in ${SEEDS:-1 2}; do
    jobs+=("make-run-metamixup-s$s num_val=0 seed=$s split_seed=$s"
           "make-run-supervised-s$s num_val=0 seed=$s split_seed=$s algorithm=supervised iterations=4660 eval_every=466 checkpoint_every=466")
  done
fi
mkdir -p "$OUT"
run() {
  name=$1; shift
  [ -f "$OUT/$name/results.json" ] && { echo "$name: finished"; return; }
  $METASSL train --preset fmnist-1000 --quiet --force --out "$OUT/$name" algorithm=metamixup num_val=5000 \
    threads=1 seed=0 "$@" > "$OUT/$name.log" 2>&1 && tail -1 "$OUT/$name.log"
}
export -f run; export OUT METASSL
printf '%s\n' "${jobs[@]}" | xargs -P "$NPAR" -L 1 bash -c 'run "$@"' _
