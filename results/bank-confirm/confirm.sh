#!/usr/bin/env bash
# Paired confirmation on the test set, seeds (= split seeds) 0-2: the new fmnist-1000 preset as `make run` runs it,
# its twin without the meta part (algorithm=selftrain), and at 100 labels the same pair plus supervised for the
# same minutes (4660 iterations: make run's training seconds at the supervised step's cost). Two at a time,
# one thread each; a finished run (results.json) is skipped.
cd "$(git rev-parse --show-toplevel)"
OUT=${OUT:-runs/confirm}; mkdir -p $OUT
run() { name=$1; shift; [ -f $OUT/$name/results.json ] && return
  nice -n -15 .venv/bin/metassl train --preset fmnist-1000 --quiet --force --out $OUT/$name threads=1 "$@" > $OUT/$name.log 2>&1; }
export -f run; export OUT
for s in 0 1 2; do
  echo "default-1000-s$s seed=$s split_seed=$s"
  echo "twin-1000-s$s seed=$s split_seed=$s algorithm=selftrain"
done > $OUT/queue.txt
for s in 0 1 2; do
  echo "default-100-s$s seed=$s split_seed=$s num_labels=100"
  echo "supervised-100-s$s seed=$s split_seed=$s num_labels=100 algorithm=supervised iterations=4660 labeled_warmup=0 eval_every=466 checkpoint_every=466"
  echo "twin-100-s$s seed=$s split_seed=$s num_labels=100 algorithm=selftrain"
done >> $OUT/queue.txt
cat $OUT/queue.txt | xargs -P ${NPAR:-2} -L 1 bash -c 'run "$@"' _
