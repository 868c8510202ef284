#!/usr/bin/env bash
# The prepared accelerator check: tokens/s and MFU of the `base` train step on one lent H100/H200,
# in one table, within 8 minutes (compiles included).
#
#   bash benchmarks/gpu_check.sh                 (on the GPU machine, from anywhere)
#   bash benchmarks/gpu_check.sh --steps 10      (extra arguments go to gpu_mfu.py, last wins)
#   AMBER_GPU_CHECK_NO_INSTALL=1 JAX_PLATFORMS=cpu bash benchmarks/gpu_check.sh --tiny --steps 1 \
#     --warmup 0                                 (the dry run on the CPU: tests/test_gpu_check.py)
#
# The machine: Python 3.12 with jax (CUDA) preinstalled, flax/optax/orbax installed; no
# TensorFlow, no grain, no Beam, no network. The project goes in with `pip install --no-deps -e .`
# (skipped with AMBER_GPU_CHECK_NO_INSTALL=1; if pip cannot install it offline, the check runs
# from the checkout, which gpu_mfu.py puts on sys.path). Nothing gpu_mfu.py imports needs TF.
#
# Rows: step mlm and amber (MLM + TLM + SA + WA), packed and unpacked, sequence 128 and 512, bf16,
# attention 'cudnn' only, and the base preset's layer scan and remat 'dots'; 32,768 token
# positions per step, warmup 2, median of 5 steps. That is 8 compiles of the base step (~30-60 s
# each on an H100), so the whole run fits in `timeout 480`. After the table: the packed/unpacked
# ratio of useful tokens/s at each sequence length, and the MFU goals (MLM >= 55%, AMBER >= 45%).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-$(command -v python3 || command -v python)}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

if [ "${AMBER_GPU_CHECK_NO_INSTALL:-0}" != 1 ]; then
  # Offline, pip can only build the package with the setuptools already here.
  if "$py" -c 'import setuptools' 2>/dev/null; then
    install=("$py" -m pip install --quiet --no-deps --no-build-isolation -e .)
  else
    install=("$py" -m pip install --quiet --no-deps --retries 0 --timeout 10 -e .)
  fi
  if ! "${install[@]}"; then
    echo 'gpu_check: pip could not install the project; running from the checkout' >&2
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi

"$py" -c 'import jax; print(jax.devices())'
timeout 480 "$py" benchmarks/gpu_mfu.py --seq 128,512 --step mlm,amber \
  --packing packed,unpacked --attention cudnn --remat dots --scan --dtype bfloat16 \
  --warmup 2 --steps 5 "$@"
