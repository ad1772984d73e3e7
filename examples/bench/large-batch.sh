#!/usr/bin/env bash
# Issue 17, the batch-size test: does the grown model keep more of the target's pace when each step sees more tokens
# (further from the gradient-noise regime, towards the paper's 524k tokens per step)? The setup of data-repetition.sh
# (the mixed corpus, GPT-2 2×d64 grown to 2×d128 at 19% of the budget, default Adam, LR constant after a warmup, the
# common cooldown, the whole validation split) with BATCH sequences of 128 bytes per step (64: 8,192 tokens, the
# default; 256: 32,768) and the step counts of the batch-64 design whatever the batch, so the budget grows with it
# (4.23e13 FLOPs × BATCH / 64; batch 16 in data-repetition.sh had 4× these steps at the same budget as batch 64):
#   - the target from scratch (seed 0), 1,800 steps, a snapshot every 150 steps, each cooled down 75 steps and
#     evaluated on the whole validation split (its cooled-down frontier), then seeds 1, 2 cooled down at the end (its
#     spread);
#   - the 2×d64 to step 1,250 (8.05e12 × BATCH / 64 FLOPs), grown with LR × 1, seeds 1 and 2, each to the budget
#     (1,443 steps) + the same cooldown.
# LR (default 2e-3 for batch 64: the square-root rule from 1e-3 at batch 16), warmup and re-warmup 25 steps.
# Two chains in parallel, one thread each. Resumable: rerun the same command after a kill.
#
#   [BATCH=64] [LR=2e-3] bash examples/bench/large-batch.sh <work dir> [<mixed corpus dir>]   (built in <work>/corpus when absent)
#   node examples/bench/cooled-table.mjs <work>/grown/* --frontier <work>/frontier/t-2x128-s0* --start <work>/frontier/s-2x64-s0.step-1250/none-s0
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mkdir -p "${1:?usage: large-batch.sh <work dir> [<corpus dir>]}" && cd "$1" && pwd)
cd "$work"
source "$here/bench-lib.sh"
corpus=${2:-$work/corpus}
mixed_corpus "$corpus"
BATCH=${BATCH:-64} LR=${LR:-2e-3} WARMUP=25 COOL=75 EVAL=25
# The target's snapshots cooled down (besides its end), its other seeds and the growth's seeds; fewer where time is
# short (batch 256 ran FRONTIER="300 450 600 900 1200 1500 1650" TARGET_SEEDS="" GROWN_SEEDS=1).
FRONTIER=${FRONTIER-300 600 900 1200 1500 450 750 1050 1350 1650} TARGET_SEEDS=${TARGET_SEEDS-1 2} GROWN_SEEDS=${GROWN_SEEDS-1 2}
settings "$corpus/train.txt" "$corpus/validation.txt"

target() {
  init t-2x128-s0 128 4 0
  trainto t-2x128-s0 1800 --save-every 150 --keep-every 150
  for s in $FRONTIER; do cool t-2x128-s0.step-$s; done
  cool t-2x128-s0
  for seed in $TARGET_SEEDS; do init t-2x128-s$seed 128 4 $seed; trainto t-2x128-s$seed 1800 --save-every 150; cool t-2x128-s$seed; done
}
small() {
  init s-2x64-s0 64 2 0
  trainto s-2x64-s0 1250 --save-every 125 --keep-every 1250
  cool s-2x64-s0.step-1250
  for seed in $GROWN_SEEDS; do
    $A s-2x64-s0.step-1250 --out grown --variants w-lr1 --steps 1443 --cooldown $COOL --seeds $seed $AD
  done
}
target > target.log 2>&1 &
small > small.log 2>&1 &
wait
echo "done: node $here/cooled-table.mjs $work/grown/* --frontier $work/frontier/t-2x128-s0* --start $work/frontier/s-2x64-s0.step-1250/none-s0"
