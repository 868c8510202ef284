#!/usr/bin/env bash
# Runs every CPU benchmark in turn and prints their figures (no timed tests anywhere).
#   bash benchmarks/run_all.sh            (from the repository root, after the README's install)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
export TF_CPP_MIN_LOG_LEVEL=2
$py benchmarks/cpu_vs_torch.py
$py benchmarks/objective_cost.py
