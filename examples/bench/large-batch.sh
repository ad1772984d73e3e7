#!/usr/bin/env bash
# Issue 17, the batch-size test: does the grown model keep more of the target's pace when each step sees more tokens
# (further from the gradient-noise regime, towards the paper's 524k tokens per step)? The setup of data-repetition.sh
# (the mixed corpus, GPT-2 2×d64 grown to 2×d128 at 8.05e12 FLOPs, default Adam, LR constant after a warmup, the
# common cooldown, the whole validation split, the budget of 4.23e13 FLOPs) with BATCH sequences of 128 bytes per step
# (64: 8,192 tokens, the default; 256: 32,768) instead of 16, and every step count of data-repetition.sh divided by
# BATCH / 16, so the tokens and FLOPs are the same:
#   - the target from scratch (seed 0), a snapshot every 600 × 16 / BATCH steps, each cooled down and evaluated on the
#     whole validation split (its cooled-down frontier), then TARGET_SEEDS (1 2) cooled down at the end (its spread);
#   - the 2×d64 to 8.05e12 FLOPs, grown with LR × 1, GROWN_SEEDS (1 2), each to the budget + the same cooldown.
# LR (default 2e-3 for batch 64: the square-root rule from 1e-3 at batch 16); warmup, re-warmup and cooldown scaled.
# Two chains in parallel, one thread each. Resumable: rerun the same command after a kill.
#
#   [BATCH=64] [LR=2e-3] bash examples/bench/large-batch.sh <work dir> [<mixed corpus dir>]   (built in <work>/corpus when absent)
#   node examples/bench/cooled-table.mjs <work>/grown/* --frontier <work>/frontier/t-2x128-s0* --start <work>/frontier/s-2x64-s0.step-<SMALL>/none-s0
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mkdir -p "${1:?usage: large-batch.sh <work dir> [<corpus dir>]}" && cd "$1" && pwd)
cd "$work"
source "$here/bench-lib.sh"
corpus=${2:-$work/corpus}
mixed_corpus "$corpus"
BATCH=${BATCH:-64} LR=${LR:-2e-3}
K=$((BATCH / 16)); r() { echo $((($1 + K / 2) / K)); } # a batch-16 step count at this batch
TARGET=$(r 7200) SMALL=$(r 5000) GROWN=$(r 5772) SAVE=$(r 600) WARMUP=$(r 100) COOL=$(r 300) EVAL=$(r 100)
FRONTIER=${FRONTIER-$(seq -s ' ' $((2 * SAVE)) $SAVE $((TARGET - SAVE)))} TARGET_SEEDS=${TARGET_SEEDS-1 2} GROWN_SEEDS=${GROWN_SEEDS-1 2}
settings "$corpus/train.txt" "$corpus/validation.txt"

target() {
  init t-2x128-s0 128 4 0
  trainto t-2x128-s0 $TARGET --save-every $SAVE --keep-every $SAVE
  for s in $FRONTIER; do cool t-2x128-s0.step-$s; done
  cool t-2x128-s0
  for seed in $TARGET_SEEDS; do init t-2x128-s$seed 128 4 $seed; trainto t-2x128-s$seed $TARGET --save-every $SAVE; cool t-2x128-s$seed; done
}
small() {
  init s-2x64-s0 64 2 0
  trainto s-2x64-s0 $SMALL --save-every $SAVE --keep-every $SMALL
  cool s-2x64-s0.step-$SMALL
  for seed in $GROWN_SEEDS; do
    $A s-2x64-s0.step-$SMALL --out grown --variants w-lr1 --steps $GROWN --cooldown $COOL --seeds $seed $AD
  done
}
target > target.log 2>&1 &
small > small.log 2>&1 &
wait
echo "done: node $here/cooled-table.mjs $work/grown/* --frontier $work/frontier/t-2x128-s0* --start $work/frontier/s-2x64-s0.step-$SMALL/none-s0"
