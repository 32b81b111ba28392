#!/usr/bin/env bash
# One GPU, one command, one JSON file (benchmarks/gpu_suite.py), < 8 min.
#   bash benchmarks/gpu_suite.sh [--uwav_root=UWAV] [--out=gpu_suite.json]
# Installs missing pure dependencies (grain, ml_collections, ...) from .whl/
# (benchmarks/fetch_gpu_wheels.sh) when the machine cannot reach PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py="${PYTHON:-python3}"
if [ -d .whl ] && ! "$py" -c "import grain, ml_collections" 2>/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
# The suite keeps its own budget (--budget_s, default 450 s); the outer
# limit only guards against a hang. The JSON is rewritten after each section.
exec timeout 480 "$py" benchmarks/gpu_suite.py "$@"
