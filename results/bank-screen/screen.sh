#!/usr/bin/env bash
# The label-bank screen: fmnist-1000, seed 0, every choice read off num_val=5000 validation images.
# Each line: NAME then overrides; a finished run (results.json) is skipped. Two at a time, one thread each.
cd "$(git rev-parse --show-toplevel)"
OUT=runs/bank; mkdir -p $OUT
R="iterations=2000 labeled_warmup=800 bank_every=400 consistency_rampup=100 bank_threshold=0.9 bank_tta=false eval_every=400 checkpoint_every=400 num_val=5000 threads=1"
run() { name=$1; shift; [ -f $OUT/$name/results.json ] && return
  nice -n -15 .venv/bin/metassl train --preset fmnist-1000 --quiet --force --out $OUT/$name $R "$@" > $OUT/$name.log 2>&1; }
export -f run; export OUT R
cat results/bank-screen/${QUEUE:-queue.txt} | xargs -P 2 -L 1 bash -c 'run "$@"' _
