#!/usr/bin/env bash
# Issue 17, dropout everywhere (the paper's setting: dropout 0.1 in the small model, the grown one and the target from
# scratch): the setup of data-repetition.sh (the mixed corpus, GPT-2 2×d64 grown to 2×d128 at 8.05e12 FLOPs, default
# Adam, LR 1e-3 after 100 warmup steps, batch 16 × 128 bytes, budget 4.23e13) with `staged init --dropout 0.1`:
#   - the target from scratch (seed 0), a snapshot every 600 steps, each cooled down 300 steps and evaluated on the
#     whole validation split (dropout off in evaluation): its cooled-down frontier;
#   - the 2×d64 to step 5,000 (8.05e12), grown with LR × 1 and with antithetic noise 1e-2, seeds 1 and 2, each to the
#     budget + the same cooldown.
# Two chains in parallel, one thread each. Resumable: rerun the same command after a kill.
#
#   bash examples/bench/dropout-everywhere.sh <work dir> <mixed corpus dir (data-repetition.sh's corpus/)>
#   node examples/bench/cooled-table.mjs <work>/grown-8e12/* --frontier <work>/frontier/t-2x128-s0* --start <work>/frontier/s-2x64-s0.step-5000/none-s0
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mkdir -p "${1:?usage: dropout-everywhere.sh <work dir> <corpus dir>}" && cd "$1" && pwd)
corpus=$(cd "${2:?usage: dropout-everywhere.sh <work dir> <corpus dir>}" && pwd)
cd "$work"
source "$here/bench-lib.sh"
settings "$corpus/train.txt" "$corpus/validation.txt" "--dropout 0.1"

target() {
  init t-2x128-s0 128 4 0
  trainto t-2x128-s0 7200 --save-every 600 --keep-every 600
  for s in 1200 2400 3600 4800 6000; do cool t-2x128-s0.step-$s; done
  cool t-2x128-s0
  for s in 1800 3000 4200 5400 6600; do cool t-2x128-s0.step-$s; done
}
small() {
  init s-2x64-s0 64 2 0
  trainto s-2x64-s0 5000 --save-every 500 --keep-every 2500
  cool s-2x64-s0.step-5000
  for v in w-lr1 w-anti1e-2; do for seed in 1 2; do
    $A s-2x64-s0.step-5000 --out grown-8e12 --variants $v --steps 5772 --cooldown 300 --seeds $seed $AD
  done; done
}
target > target.log 2>&1 &
small > small.log 2>&1 &
wait
echo "done: node $here/cooled-table.mjs $work/grown-8e12/* --frontier $work/frontier/t-2x128-s0* --start $work/frontier/s-2x64-s0.step-5000/none-s0"
