# Shared by the per-table sweep scripts (sourced, not run). Usage of every script:
#   scripts/sweeps/<table>.sh [local|slurm|basic] [extra Hydra overrides...]
# local: all jobs of a sweep in parallel on this machine (submitit); slurm: a job array (set the
# cluster with overrides such as hydra.launcher.partition=gpu); basic: one job after another.
# RATIOS and SEEDS (environment) override the defaults below.
set -euo pipefail
cd "$(dirname "$0")/../.."
LAUNCHER="${1:-local}"
shift || true
case "$LAUNCHER" in
  local|slurm) LAUNCH=("launcher=$LAUNCHER") ;;
  basic) LAUNCH=() ;;
  *) echo "error: launcher '$LAUNCHER': choose local, slurm or basic" >&2; exit 2 ;;
esac
RATIOS="${RATIOS:-0,0.25,0.4}"  # 0 is plain backprop, the baseline every row is compared with
SEEDS="${SEEDS:-0,1,2}"
PYTHON="${PYTHON:-python}"

# sweep EXPERIMENT [more overrides...]: every ratio x seed of one experiment
sweep() {
  local experiment="$1"
  shift
  "$PYTHON" train.py -m "${LAUNCH[@]}" "experiment=$experiment" "repl.ratio=$RATIOS" "seed=$SEEDS" "$@" "${EXTRA[@]}"
}
EXTRA=("$@")
