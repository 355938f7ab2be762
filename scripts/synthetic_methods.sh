#!/usr/bin/env bash
# Reproduce README "Results / The embedded dataset": one run per method on the default setting
# (ResNet-32, synthetic data, 4 epochs, seed 0) and BP vs RepL on the embedded corpus (task=lm),
# then copy each completed summary.json to results/synthetic/ (only without extra overrides).
# Usage: scripts/synthetic_methods.sh [extra Hydra overrides, e.g. trainer.device=cuda seed=1]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/synthetic_methods}
declare -A RUNS=(
  [resnet32_bp]="repl=none"
  [resnet32_repl_lite_025]="repl.ratio=0.25"
  [resnet32_repl_lite_max]="repl.ratio=0.466"
  [resnet32_repl_full_025]="repl.ratio=0.25 repl.surrogate=full"
  [resnet32_drop_025]="repl=drop"
  [resnet32_freeze_025]="repl=freeze"
  [resnet32_sd]="repl=stochastic_depth"
  [lm_bp]="task=lm repl=none"
  [lm_repl_lite_025]="task=lm"
)
# Extra overrides change what is trained: such runs go to their own directories (a seed=1 run must not find the
# seed-0 checkpoint) and are not copied over the committed results/synthetic/*.json, which are the default setting's.
suffix=""
if [ "$#" -gt 0 ]; then
  suffix="__$(printf '%s,' "$@" | sed 's/,$//; s|[/ ]|_|g')"
fi
mkdir -p results/synthetic
for name in resnet32_bp resnet32_repl_lite_025 resnet32_repl_lite_max resnet32_repl_full_025 resnet32_drop_025 \
            resnet32_freeze_025 resnet32_sd lm_bp lm_repl_lite_025; do
  run="$OUT/$name$suffix"
  # shellcheck disable=SC2086 # each entry is a list of overrides
  "$PY" train.py ${RUNS[$name]} "$@" trainer.progress=false hydra.run.dir="$run"
  if [ -n "$suffix" ]; then
    echo "synthetic_methods.sh: $run/summary.json (extra overrides: results/synthetic/ left as it is)"
  elif "$PY" -c "import json, sys; sys.exit(json.load(open(sys.argv[1])).get('status') != 'completed')" "$run/summary.json"; then
    cp "$run/summary.json" "results/synthetic/.$name.json.tmp"  # then a rename: a reader never sees half a file
    mv "results/synthetic/.$name.json.tmp" "results/synthetic/$name.json"
  else
    echo "synthetic_methods.sh: $run did not complete; results/synthetic/$name.json left as it is" >&2
    exit 1
  fi
done
