#!/usr/bin/env bash
# `pnpm --silent demo`: the paper's claim measured in about ten minutes on 2 cores — a short version of
# examples/bench/staged-bench.mjs. Pilot runs of four small GPT-2 sizes on Brown fit a scaling law; the law
# picks the model that is compute-optimal for the budget; that model is trained from scratch (the baseline)
# and as a staged run (its half-width model, grown when the scheduler's online rule says so) and the first
# model alone (never grown). Every run ends with the same cooldown (LR linearly to 0) and is evaluated on the
# whole validation split; the baseline also cools down copies of itself on the way (its cooled-down frontier), and
# the saving is the baseline's FLOPs to the staged run's cooled-down loss against the staged run's FLOPs. The width
# growth keeps the LR and breaks the copies' symmetry with antithetic noise, the best of the growth-dynamics
# ablation (packages/run/README.md). One seed: the full benchmark has the seeds that measure the noise.
# Usage: examples/staged-demo.sh [out-directory]   (default: a fresh directory under /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d /tmp/staged-demo.XXXXXX)}
node examples/bench/staged-bench.mjs --quick --out "$out" --parallel 2 --threads 1
echo "runs, report.md and report.png in $out"
