#!/usr/bin/env bash
# FixMatch at `make run`'s budget (the fmnist-1000 preset: 2000 iterations, the first 800 labeled-only) with a fixed
# unlabeled batch of 64 and with one that grows from 8 to 64 over the first 600 SSL iterations (Fast FixMatch's
# curriculum), scored on validation only (num_val=5000, seed 0), one thread each. A finished run is skipped.
cd "$(git rev-parse --show-toplevel)"
OUT=${OUT:-runs/curriculum-screen}; mkdir -p $OUT
run() { name=$1; shift; [ -f $OUT/$name/results.json ] && return
  nice -n -15 .venv/bin/metassl train --preset fmnist-1000 --quiet --force --out $OUT/$name threads=1 num_val=5000 \
    algorithm=fixmatch "$@" > $OUT/$name.log 2>&1; }
run fixmatch
run fixmatch-grow unlabeled_batch_start=8 unlabeled_batch_rampup=600
