#!/usr/bin/env bash
# A whole staged run on the embedded Brown corpus, through the `staged` command:
# train a small GPT-2, grow its width ×2 (exact: same loss), keep training, grow its depth ×2, train on.
# Usage: examples/staged-brown.sh [run-directory]   (default: a fresh directory under /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
staged() { node packages/cli/dist/bin.js "$@"; }
run=${1:-$(mktemp -d /tmp/staged-brown.XXXXXX)}
[ -e "$run/small" ] && { echo "$run/small exists: pass a fresh run directory" >&2; exit 1; }
mkdir -p "$run"
data=(--data brown --batch 8 --context 64 --eval-every 20)

staged init "$run/small" --layers 2 --d-model 64 --heads 2 --context 64 --seed 0
# One linear schedule over the whole staged run (120 steps); each growth restarts it with a short re-warmup.
staged train "$run/small" "${data[@]}" --steps 60 --lr 3e-3 --schedule linear --warmup 10 --total-steps 120
staged eval "$run/small" --data brown --context 64 --max-blocks 64
staged grow width "$run/small" "$run/wide" --factor 2 --rewarmup 5
staged eval "$run/wide" --data brown --context 64 --max-blocks 64
staged train "$run/wide" "${data[@]}" --steps 40
staged grow depth "$run/wide" "$run/deep" --factor 2 --init identity --rewarmup 5
staged train "$run/deep" "${data[@]}" --steps 20
staged inspect "$run/deep"
echo "checkpoints in $run: small, wide, deep (each an HF model directory plus its training state)"
