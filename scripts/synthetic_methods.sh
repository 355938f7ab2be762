#!/usr/bin/env bash
# Reproduce README "Results / The embedded dataset": one run per method on the default setting
# (ResNet-32, synthetic data, 4 epochs, seed 0), then copy each summary.json to results/synthetic/.
# Usage: scripts/synthetic_methods.sh [extra Hydra overrides, e.g. trainer.device=cuda seed=1]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/synthetic_methods}
declare -A RUNS=(
  [bp]="repl=none"
  [repl_lite_025]="repl.ratio=0.25"
  [repl_lite_max]="repl.ratio=0.466"
  [repl_full_025]="repl.ratio=0.25 repl.surrogate=full"
  [drop_025]="repl=drop"
  [freeze_025]="repl=freeze"
  [sd]="repl=stochastic_depth"
)
mkdir -p results/synthetic
for name in bp repl_lite_025 repl_lite_max repl_full_025 drop_025 freeze_025 sd; do
  # shellcheck disable=SC2086 # each entry is a list of overrides
  "$PY" train.py ${RUNS[$name]} "$@" trainer.progress=false hydra.run.dir="$OUT/$name"
  cp "$OUT/$name/summary.json" "results/synthetic/resnet32_$name.json"
done
