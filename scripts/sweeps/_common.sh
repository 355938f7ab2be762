# Shared by the per-table sweep scripts (sourced, not run). Usage of every script:
#   scripts/sweeps/<table>.sh [local|slurm|basic] [extra Hydra overrides...]
# local: all jobs of a sweep in parallel on this machine (submitit); slurm: a job array per
# experiment (set the cluster with overrides such as hydra.launcher.partition=gpu), every
# experiment of the table submitted at once; basic: one job after another.
# RATIOS and SEEDS (environment) override the defaults below; TOGETHER=1 (the default with slurm)
# launches every experiment's sweep at once, TOGETHER=0 one experiment after another.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
LAUNCHER="${1:-local}"
shift || true
case "$LAUNCHER" in
  local|slurm) LAUNCH=("launcher=$LAUNCHER") ;;
  basic) LAUNCH=() ;;
  *) echo "error: launcher '$LAUNCHER': choose local, slurm or basic" >&2; exit 2 ;;
esac
# submitit's launcher waits for each job array: one sweep after another would queue a table's
# experiments one at a time on SLURM, so there each sweep runs in its own background process.
TOGETHER="${TOGETHER:-$([ "$LAUNCHER" = slurm ] && echo 1 || echo 0)}"
case "$TOGETHER" in
  0|1) ;;
  *) echo "error: TOGETHER=$TOGETHER: choose 1 (every experiment at once) or 0 (one after another)" >&2; exit 2 ;;
esac
RATIOS="${RATIOS:-0,0.25,0.4}"  # 0 is plain backprop, the baseline every row is compared with
SEEDS="${SEEDS:-0,1,2}"
# the project's virtual environment when there is one (as scripts/gpu.sh), else python on PATH
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi

# sweep EXPERIMENT [more overrides...]: every ratio x seed of one experiment
sweep() {
  local experiment="$1"
  shift
  "$PYTHON" train.py -m "${LAUNCH[@]}" "experiment=$experiment" "repl.ratio=$RATIOS" "seed=$SEEDS" "$@" "${EXTRA[@]}"
}
EXTRA=("$@")

# table EXPERIMENT...: sweep every experiment of a table (all at once when TOGETHER=1); names each
# experiment whose sweep had failed jobs and returns 1 if any did, once all have finished.
table() {
  local experiment failed=0 i=0
  local -a pids=()
  for experiment in "$@"; do
    if [ "$TOGETHER" = 1 ]; then
      sweep "$experiment" &
      pids+=("$!")
    elif ! sweep "$experiment"; then
      echo "sweep $experiment had failed jobs (see its failed_jobs.txt)" >&2
      failed=1
    fi
  done
  if [ "$TOGETHER" = 1 ]; then
    for experiment in "$@"; do
      if ! wait "${pids[$i]}"; then
        echo "sweep $experiment had failed jobs (see its failed_jobs.txt)" >&2
        failed=1
      fi
      i=$((i + 1))
    done
  fi
  return "$failed"
}
