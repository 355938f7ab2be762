#!/usr/bin/env bash
# Reproduce README "Results / The embedded dataset": one run per method on the default setting
# (ResNet-32, synthetic data, 4 epochs, seed 0) and BP vs RepL on the embedded corpus (task=lm),
# then copy each summary.json to results/synthetic/.
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
mkdir -p results/synthetic
for name in resnet32_bp resnet32_repl_lite_025 resnet32_repl_lite_max resnet32_repl_full_025 resnet32_drop_025 \
            resnet32_freeze_025 resnet32_sd lm_bp lm_repl_lite_025; do
  # shellcheck disable=SC2086 # each entry is a list of overrides
  "$PY" train.py ${RUNS[$name]} "$@" trainer.progress=false hydra.run.dir="$OUT/$name"
  cp "$OUT/$name/summary.json" "results/synthetic/$name.json"
done
