#!/usr/bin/env bash
# The whole pipeline in minutes on a CPU, on the embedded dataset (never a paper number):
# 2 ratios x 2 seeds, then a runs CSV, the tables and the figures, all of them under SMOKE_OUT
# (default results/smoke/): a pipeline check never replaces results/runs.csv, results/tables or results/figures.
RATIOS="${RATIOS:-0,0.25}"
SEEDS="${SEEDS:-0,1}"
source "$(dirname "$0")/_common.sh"
SMOKE_OUT="${SMOKE_OUT:-results/smoke}"
sweep smoke trainer.progress=false
"$PYTHON" scripts/collect.py multirun/smoke --out "$SMOKE_OUT/runs.csv"
"$PYTHON" scripts/make_tables.py --runs "$SMOKE_OUT/runs.csv" --out "$SMOKE_OUT/tables"
"$PYTHON" scripts/plots.py --runs "$SMOKE_OUT/runs.csv" --out "$SMOKE_OUT/figures"
echo "smoke pipeline: $SMOKE_OUT/runs.csv, $SMOKE_OUT/tables/, $SMOKE_OUT/figures/ (results/runs.csv, results/tables and results/figures untouched)"
