#!/usr/bin/env bash
# Fill DIR with what scripts/gpu_check.sh needs on the lent GPU machine (which has no network); run it on a
# networked development machine with the project's .venv set up:
#
#   scripts/gpu_wheels.sh DIR
#
# 1. downloads the pinned wheels of scripts/gpu_wheels.txt, for CPython 3.12 manylinux x86_64, no deps
#    (the list is complete by itself: tests/test_gpu_check_script.py checks it against the machine);
# 2. regenerates scripts/gpu_wheels.requires.txt from the wheels' METADATA (commit it when it changes);
# 3. copies the SmolLM2 tokenizer (3.4 MB, built from the packaged GGUF into .cache on first use) to
#    DIR/tokenizers/: the tiny random test models use the real tokenizer, and the GGUF (100+ MB) cannot travel;
# 4. prints the total size: DIR plus the repository must stay under the 64 MiB that travels per command.
# Keep DIR out of git: /tmp/..., or gpu_wheels/ in the repository (ignored), which a device call can carry.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:?usage: scripts/gpu_wheels.sh DIR}
PY=${PYTHON:-.venv/bin/python}
LIMIT=$((64 * 1024 * 1024))

mkdir -p "$DIR"
"$PY" -m pip download --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --implementation cp --no-deps -r scripts/gpu_wheels.txt -d "$DIR"
"$PY" scripts/gpu_requires.py extract "$DIR" --out scripts/gpu_wheels.requires.txt

tokenizer=$("$PY" -c "from drostudy.models import smollm2_tokenizer, SMOLLM2; from drostudy.io import cache_dir
smollm2_tokenizer(); print(cache_dir() / 'tokenizers' / SMOLLM2)")
rm -rf "$DIR/tokenizers"
mkdir -p "$DIR/tokenizers"
cp -r "$tokenizer" "$DIR/tokenizers/"

# what travels: the pinned wheels, the tokenizer, the tracked repository files
wheels=$(grep -o '^# [^ ]*\.whl' scripts/gpu_wheels.requires.txt | cut -c3- | sed "s|^|$DIR/|")
bundle=$(cat $wheels <(find "$DIR/tokenizers" -type f -exec cat {} +) | wc -c)
repo=$(git ls-files -z | xargs -0 cat 2>/dev/null | wc -c)
ls -l $wheels
echo "gpu_wheels: wheels + tokenizer $((bundle / 1024)) KiB, repository $((repo / 1024)) KiB," \
  "together $(((bundle + repo) / 1024)) KiB of the $((LIMIT / 1024)) KiB that travel per command"
extra=$(find "$DIR" -maxdepth 1 -name '*.whl' | grep -v -F -x -f <(printf '%s\n' $wheels) || true)
if [ -n "$extra" ]; then echo "gpu_wheels: $DIR also holds wheels not on the list (they would travel too):" $extra; fi
if [ $((bundle + repo)) -gt "$LIMIT" ]; then echo "gpu_wheels: over the 64 MiB limit" >&2; exit 1; fi
