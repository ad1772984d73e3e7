#!/usr/bin/env bash
# Issue 17, the data-repetition test: does growth keep the target's pace when no model repeats its data? The same
# GPT-2 sizes and settings as the growth-dynamics ablation (packages/run/README.md, "Growth dynamics, ablated";
# default Adam, LR 1e-3 constant after 100 warmup steps, batch 16 × 128 bytes) on the mixed corpus of
# mixed-corpus.mjs (Brown + State of the Union + Moby-Dick: 17.1 MB, 3× Brown) at a budget of 4.06e13 FLOPs, where
# the 2×d128 target sees 0.86 epoch:
#   - the target from scratch (seed 0) with a snapshot every 600 steps, each cooled down 300 steps and evaluated on the
#     whole validation split (its cooled-down frontier), and seeds 1, 2 cooled down at the end;
#   - the 2×d64 from scratch with snapshots every 2,500 steps, grown at 8.05e12 (step 5,000) and 1.61e13 (step 10,000)
#     with antithetic noise 1e-2 and with LR × 1, seeds 1 and 2, each to the budget + the same cooldown;
#   - the 2×d64 never grown to the same budget, cooled down (does the target beat it there?).
# Two chains in parallel, one thread each (about 3 hours on 2 free cores). Resumable: rerun the same command after a
# kill; finished pieces are skipped, training resumes from its last save.
#
#   bash examples/bench/data-repetition.sh <work dir>
#   node examples/bench/cooled-table.mjs <work>/grown-*/* --frontier <work>/frontier/t-2x128-s0* --start <work>/frontier/s-2x64-s0.step-5000/none-s0
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mkdir -p "${1:?usage: data-repetition.sh <work dir>}" && cd "$1" && pwd)
cd "$work"
source "$here/bench-lib.sh"

mixed_corpus corpus
settings "$work/corpus/train.txt" "$work/corpus/validation.txt"

target() {
  init t-2x128-s0 128 4 0
  trainto t-2x128-s0 7200 --save-every 600 --keep-every 600
  for s in 1200 1800 2400 3000 3600 4200 4800 5400 6000 6600; do cool t-2x128-s0.step-$s; done
  cool t-2x128-s0
  while [ ! -f s-2x64-s0.step-5000/training_state.json ]; do sleep 15; done
  for v in w-anti1e-2 w-lr1; do for seed in 1 2; do
    $A s-2x64-s0.step-5000 --out grown-8e12 --variants $v --steps 5772 --cooldown 300 --seeds $seed $AD
  done; done
  for seed in 1 2; do init t-2x128-s$seed 128 4 $seed; trainto t-2x128-s$seed 7200 --save-every 600; cool t-2x128-s$seed; done
}
small() {
  init s-2x64-s0 64 2 0
  trainto s-2x64-s0 10000 --save-every 500 --keep-every 2500
  cool s-2x64-s0.step-5000
  cool s-2x64-s0.step-10000
  for v in w-anti1e-2 w-lr1; do for seed in 1 2; do
    $A s-2x64-s0.step-10000 --out grown-1.6e13 --variants $v --steps 4343 --cooldown 300 --seeds $seed $AD
  done; done
  trainto s-2x64-s0 25200 --save-every 500 --keep-every 2500
  for s in 15000 20000; do cool s-2x64-s0.step-$s; done
  cool s-2x64-s0
}
target > target.log 2>&1 &
small > small.log 2>&1 &
wait
echo "done: node $here/cooled-table.mjs $work/grown-*/* --frontier $work/frontier/t-2x128-s0* --start $work/frontier/s-2x64-s0.step-5000/none-s0"
