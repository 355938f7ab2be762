#!/usr/bin/env bash
# The whole pipeline in minutes on a CPU, on the embedded dataset (never a paper number):
# 2 ratios x 2 seeds, then runs.csv, the tables and the figures.
RATIOS="${RATIOS:-0,0.25}"
SEEDS="${SEEDS:-0,1}"
source "$(dirname "$0")/_common.sh"
sweep smoke trainer.progress=false
"$PYTHON" scripts/collect.py multirun/smoke
"$PYTHON" scripts/make_tables.py
"$PYTHON" scripts/plots.py
