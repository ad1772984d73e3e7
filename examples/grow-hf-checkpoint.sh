#!/usr/bin/env bash
# Grow a pretrained Hugging Face GPT-2 checkpoint and keep training it, through the `staged` command.
# The input is any HF GPT-2 directory: config.json, model.safetensors (or shards + index) and usually
# tokenizer.json, e.g. what `huggingface-cli download openai-community/gpt2 --include "*.json" "*.safetensors"`
# fetches on a machine with hub access. Its own tokenizer.json is used for the data; it is never modified.
# Usage: examples/grow-hf-checkpoint.sh <hf-gpt2-dir> <run-dir> [steps]   (after `pnpm build`)
set -euo pipefail
cd "$(dirname "$0")/.."
staged() { node packages/cli/dist/bin.js "$@"; }
[ $# -ge 2 ] || { echo "usage: $0 <hf-gpt2-dir> <run-dir> [steps]" >&2; exit 2; }
in=$1 run=$2 steps=${3:-20}
T=${CONTEXT:-128}

staged inspect "$in"
staged eval "$in" --data brown --context "$T" --max-blocks 32
# Width ×2 keeps the function exactly (the loss before and after is printed); AdamW starts from zero
# moments since a pretrained checkpoint has none, with a short warmup.
staged grow width "$in" "$run/wide" --factor 2 --symmetry split --seed 1 --eval-data brown --eval-context "$T" --eval-blocks 16
staged train "$run/wide" --data brown --steps "$steps" --batch 4 --context "$T" --lr 1e-4 --schedule cosine \
  --warmup $((steps / 10 + 1)) --total-steps "$steps" --eval-every "$steps"
staged eval "$run/wide" --data brown --context "$T" --max-blocks 32
staged inspect "$run/wide"
