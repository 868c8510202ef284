#!/usr/bin/env bash
# Runs every benchmark in turn and prints their figures (no timed tests anywhere); gpu_mfu.py
# only where JAX sees a GPU.
#   bash benchmarks/run_all.sh            (from the repository root, after the README's install)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
export TF_CPP_MIN_LOG_LEVEL=2
$py benchmarks/cpu_vs_torch.py                  # base: MLM, and the packed AMBER step
$py benchmarks/cpu_vs_torch.py --preset tiny    # the demo's shape, 8k vocabulary
$py benchmarks/objective_cost.py
$py benchmarks/pair_packing.py      # packed pairs vs one a row: padding and useful tokens/s
$py benchmarks/input_pipeline.py    # tokens/s per core: token cache vs seqio on raw text
$py benchmarks/memory.py          # 8 fake CPU devices: per-device bytes of the base step per mesh
$py benchmarks/compile_time.py    # lower + compile seconds of the base step, default vs options
$py benchmarks/checkpoint_storage.py  # base state: save/restore, local folder vs gs:// (emulator)
$py -m benchmarks.mining           # 1e5 x 1e5 sentences: faiss IVF / exact vs dense numpy
# benchmarks/heldout_retrieval.py and benchmarks/mining_proof.py judge trained runs: see
# docs/RESULTS.md and docs/MINING.md for their commands.
if [ "$($py -c 'import jax; print(jax.default_backend())' 2>/dev/null)" = gpu ]; then
  PYTHON=$py bash benchmarks/gpu_check.sh  # tokens/s and MFU of base on this GPU (bf16, seq 128 and 512)
else
  echo 'gpu_mfu.py skipped: no GPU (check the script on CPU: benchmarks/gpu_mfu.py --tiny --steps 2)'
fi
