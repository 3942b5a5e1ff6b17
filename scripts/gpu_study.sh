#!/usr/bin/env bash
# Run the FULL (GPU) configurations of notebooks 04 and 03 on one GPU machine, in one go, within a time box.
#
#   scripts/gpu_study.sh [--dry-run] [--only 04|03] [--minutes N]
#
# What it does, in order (each step printed first; --dry-run prints them and runs nothing):
#   1. environment: Python ($PYTHON, else .venv/bin/python; scripts/setup.sh builds .venv where it is
#      missing and the package index can be reached), offline model and data settings, runs/results/figures
#      under gpu_study/ so a GPU run never mixes with the CPU runs;
#   2. a check that torch sees a CUDA device (FULL is meant for one; without it the script stops);
#   3. notebook 04 with FULL=True (the exact testbed at its default size, then SmolLM2 RLOO at
#      drostudy.rl.study.LLM["full"]), then notebook 03 with FULL=True (drostudy.dpo.study.PRESETS), each
#      through `python -m drostudy.runner.notebooks` under `timeout`, sharing the time box (default 10
#      minutes; 04 gets 60% of it). Every training run is resumable (config-hashed folders): a notebook
#      stopped by the time box keeps its finished runs, and running the script again continues from them.
#   4. a summary: the time each notebook took, its exit status, and the comparisons CSVs written.
# The FULL configurations have not run on a GPU yet: their sizes are estimates, so the time box, not the
# sizes, guarantees the ten minutes; read the summary for what finished.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
ONLY="04 03"
MINUTES=10
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --only) shift; ONLY="${1:?--only needs 04 or 03}" ;;
    --minutes) shift; MINUTES="${1:?--minutes needs a number}" ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "gpu_study.sh: unknown argument $1 (allowed: --dry-run, --only 04|03, --minutes N)" >&2; exit 2 ;;
  esac
  shift
done
for nb in $ONLY; do
  case "$nb" in 03|04) ;; *) echo "gpu_study.sh: --only must be 04 or 03; got $nb" >&2; exit 2 ;; esac
done
case "$MINUTES" in ''|*[!0-9]*) echo "gpu_study.sh: --minutes must be a whole number; got $MINUTES" >&2; exit 2 ;; esac

run() {  # print a command, then run it unless --dry-run
  echo "+ $*"
  if [ "$DRY" = 0 ]; then "$@"; fi
}

PY=${PYTHON:-.venv/bin/python}
OUT=${GPU_STUDY_DIR:-gpu_study}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1 PYTHONPATH=$PWD
export DROSTUDY_RUNS=$OUT/runs DROSTUDY_RESULTS=$OUT/results DROSTUDY_FIGURES=$OUT/figures DROSTUDY_NO_PNG=1

if [ ! -x "$PY" ] && [ -z "${PYTHON:-}" ]; then
  # setup.sh installs the CPU build of torch: on a GPU machine set PYTHON to an environment with CUDA torch
  # (the check below stops the script otherwise)
  run scripts/setup.sh
fi
run mkdir -p "$OUT"
run "$PY" -c "import torch, sys; ok = torch.cuda.is_available(); print('cuda:', ok, torch.cuda.get_device_name(0) if ok else ''); sys.exit(0 if ok else 3)"

declare -A NOTEBOOK=([04]=notebooks/04_rl_robustness.ipynb [03]=notebooks/03_dpo_robustness.ipynb)
declare -A SHARE=([04]=60 [03]=40)
total=0; for nb in $ONLY; do total=$((total + SHARE[$nb])); done
summary=()
for nb in $ONLY; do
  seconds=$((MINUTES * 60 * SHARE[$nb] / total - 20))  # minus the 20 s grace of --kill-after
  start=$(date +%s)
  status=0
  run timeout --signal=INT --kill-after=20 "$seconds" "$PY" -m drostudy.runner.notebooks \
    "${NOTEBOOK[$nb]}" "$OUT/${nb}_executed.ipynb" --parameters '{"FULL": true}' || status=$?
  summary+=("notebook $nb: exit $status after $(( $(date +%s) - start )) s of $seconds s (124: stopped by the time box; rerun to resume)")
done
echo "== gpu_study summary =="
printf '%s\n' "${summary[@]}"
if [ "$DRY" = 0 ]; then ls -l "$OUT"/results/*.comparisons.csv 2>/dev/null || echo "no comparisons CSV written"; fi
