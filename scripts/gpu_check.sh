#!/usr/bin/env bash
# The GPU checks on the lent GPU machine as it is (Python 3.12, CUDA torch, transformers, no network, no trl):
#
#   scripts/gpu_check.sh WHEELS_DIR [--dry-run] [--report FILE] [--time-box SECONDS]
#
# WHEELS_DIR is what scripts/gpu_wheels.sh filled on a networked machine (the wheels of
# scripts/gpu_wheels.txt and tokenizers/smollm2-135m-instruct). In order, each command printed first
# (--dry-run prints them and runs nothing):
#   1. installs the wheels with `pip install --no-index --find-links WHEELS_DIR --no-deps --target SITE`,
#      then drostudy itself from the working tree (--no-deps; pip builds it with the setuptools wheel of
#      WHEELS_DIR). SITE is a fresh folder under $GPU_CHECK_DIR (default /tmp/drostudy-gpu-check) put on
#      PYTHONPATH: nothing is installed into the system or user site, so the machine's CUDA torch,
#      transformers and the rest are used as they are and never replaced (a --user install would shadow
#      them for every later job, and is refused where the system Python is externally managed; a venv
#      needs python3-venv/ensurepip, which such machines often lack). --no-deps because the list is
#      complete (tests/test_gpu_check_script.py checks it against the machine's package list);
#   2. copies the SmolLM2 tokenizer into a fresh DROSTUDY_CACHE (the tiny random test models use it);
#   3. records the GPU (torch.cuda.get_device_name) and any requirement of the installed wheels that the
#      machine does not meet (scripts/gpu_requires.py installed; informational, the tests decide);
#   4. runs `python3 -m pytest -m gpu` on the test files that hold gpu tests, under `timeout` (default
#      300 s, then SIGINT: pytest still reports what finished);
#   5. writes the report (GPU, pytest's exit status, pass/fail per test, the printed `gpu-timing:` lines)
#      to FILE (default $OUT/gpu_check_report.txt when $OUT is set, else gpu_check_report.txt) and the full
#      pytest log beside it (gpu_check_pytest.log).
# $PYTHON picks the interpreter (default python3). For a networked GPU machine and the FULL study
# notebooks, see scripts/gpu_study.sh instead.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
WHEELS=""
REPORT=""
TIME_BOX=300
usage="usage: scripts/gpu_check.sh WHEELS_DIR [--dry-run] [--report FILE] [--time-box SECONDS]"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --report) shift; REPORT="${1:?--report needs a file}" ;;
    --time-box) shift; TIME_BOX="${1:?--time-box needs a number of seconds}" ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    -*) echo "gpu_check.sh: unknown argument $1; $usage" >&2; exit 2 ;;
    *) if [ -n "$WHEELS" ]; then echo "gpu_check.sh: one WHEELS_DIR only; $usage" >&2; exit 2; fi
       WHEELS="$1" ;;
  esac
  shift
done
if [ -z "$WHEELS" ]; then echo "gpu_check.sh: WHEELS_DIR missing; $usage" >&2; exit 2; fi
case "$TIME_BOX" in ''|*[!0-9]*) echo "gpu_check.sh: --time-box must be a whole number; got $TIME_BOX" >&2; exit 2 ;; esac
if [ "$DRY" = 0 ] && [ ! -d "$WHEELS" ]; then echo "gpu_check.sh: no folder $WHEELS" >&2; exit 2; fi
WHEELS=$(cd "$WHEELS" 2>/dev/null && pwd || echo "$WHEELS")
if [ -z "$REPORT" ]; then REPORT=${OUT:+$OUT/}gpu_check_report.txt; fi
LOG="$(dirname "$REPORT")/gpu_check_pytest.log"

run() {  # print a command (shell-quoted), then run it unless --dry-run
  echo "+ $(printf '%q ' "$@")"
  if [ "$DRY" = 0 ]; then "$@"; fi
}

logged() {  # like run, and the command's output (stdout and stderr) also goes to the file $1
  local file=$1; shift
  echo "+ $(printf '%q ' "$@")> $(printf '%q' "$file")"
  if [ "$DRY" = 0 ]; then "$@" 2>&1 | tee "$file"; return "${PIPESTATUS[0]}"; fi
}

PY=${PYTHON:-python3}
WORK=${GPU_CHECK_DIR:-/tmp/drostudy-gpu-check}
SITE=$WORK/site
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export DROSTUDY_CACHE=$WORK/cache HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1
export TOKENIZERS_PARALLELISM=false CUBLAS_WORKSPACE_CONFIG=:4096:8 PIP_DISABLE_PIP_VERSION_CHECK=1
# the runtime wheels: gpu_wheels.txt without comments and build-only lines
mapfile -t RUNTIME < <(sed -e '/# build-only/d' -e 's/#.*//' -e 's/ //g' -e '/^$/d' scripts/gpu_wheels.txt)
# the files with gpu tests; collecting all of tests/ would import modules that need what the machine lacks
# (plotly, papermill, cvxpy, the asset packages)
mapfile -t FILES < <(grep -l -E '^pytestmark = .*pytest\.mark\.gpu|^ *@pytest\.mark\.gpu' tests/test_*.py)

run rm -rf "$SITE" "$DROSTUDY_CACHE"
run mkdir -p "$SITE" "$DROSTUDY_CACHE/tokenizers" "$(dirname "$REPORT")"
run "$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-deps --target "$SITE" "${RUNTIME[@]}"
run "$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-deps --target "$SITE" .
run cp -r "$WHEELS/tokenizers/smollm2-135m-instruct" "$DROSTUDY_CACHE/tokenizers/"
logged "$WORK/gpu.txt" "$PY" -c "import torch; ok = torch.cuda.is_available(); print('gpu:', torch.cuda.get_device_name(0) if ok else 'none (torch.cuda.is_available() is False)', '| torch', torch.__version__, '| cuda', torch.version.cuda)"
logged "$WORK/requires.txt" "$PY" scripts/gpu_requires.py installed || true
start=$(date +%s)
status=0
logged "$LOG" timeout --signal=INT --kill-after=20 "$TIME_BOX" "$PY" -m pytest -m gpu "${FILES[@]}" -v -rA \
  -p no:cacheprovider --color=no || status=$?
if [ "$DRY" = 1 ]; then exit 0; fi

{
  echo "drostudy GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  cat "$WORK/gpu.txt"
  echo "wheels: ${RUNTIME[*]}"
  grep -E '^(UNMET|[0-9]+ unmet)' "$WORK/requires.txt" || true
  echo "pytest -m gpu ${FILES[*]}: exit $status after $(( $(date +%s) - start )) s of $TIME_BOX s (124: stopped by the time box)"
  echo "== per test"
  grep -E '^tests/.*::.* (PASSED|FAILED|SKIPPED|XFAIL|XPASS|ERROR)' "$LOG" | sed -E 's/ +\[ *[0-9]+%\]$//' || true
  echo "== timing"
  grep -o 'gpu-timing: .*' "$LOG" || echo "no gpu-timing line (the timing test did not run or failed)"
  echo "== summary"
  grep -E '^(FAILED|ERROR|SKIPPED|XFAIL|XPASS) ' "$LOG" | cut -c1-300 || true
  grep -E '^=+ .*(passed|failed|skipped|error).* =+$' "$LOG" | tail -1 || true
} > "$REPORT"
echo "== gpu_check report ($REPORT) =="
cat "$REPORT"
exit "$status"
