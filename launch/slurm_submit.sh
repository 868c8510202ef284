#!/usr/bin/env bash
# Submits launch/slurm.sbatch with the cluster shape on the command line.
#
#   launch/slurm_submit.sh [--dry-run] --nodes N [--gpus-per-node G] [--partition P]
#       [--account A] [--time HH:MM:SS] [--job-name NAME] -- TRAIN_ARGS...
#
# e.g. launch/slurm_submit.sh --nodes 4 --gpus-per-node 8 -- --config=configs/base.py \
#        --config.workdir=/shared/runs/base --config.mesh.fsdp=-1 --config.mesh.data=1
# --dry-run prints the sbatch line instead of submitting it.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/_common.sh"

NODES=
GPUS=8
EXTRA=()
JOB=amber-jax
TIME=
ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --nodes) NODES=$2; shift ;;
    --nodes=*) NODES=${1#*=} ;;
    --gpus-per-node) GPUS=$2; shift ;;
    --gpus-per-node=*) GPUS=${1#*=} ;;
    --partition) EXTRA+=("--partition=$2"); shift ;;
    --partition=*) EXTRA+=("$1") ;;
    --account) EXTRA+=("--account=$2"); shift ;;
    --account=*) EXTRA+=("$1") ;;
    --time) TIME=$2; shift ;;
    --time=*) TIME=${1#*=} ;;
    --job-name) JOB=$2; shift ;;
    --job-name=*) JOB=${1#*=} ;;
    -h|--help) usage; exit 0 ;;
    --) shift; ARGS=("$@"); break ;;
    *) die "unknown option $1 (arguments for amber-jax train go after --)" ;;
  esac
  shift
done
need nodes "$NODES"
[[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer; got '$NODES'"
[[ "$GPUS" =~ ^[0-9]+$ ]] || die "--gpus-per-node must be an integer; got '$GPUS'"
[[ ${#ARGS[@]} -gt 0 ]] || die 'give the train arguments after --, e.g. -- --config=configs/base.py --config.workdir=/shared/runs/base'
CMD=(sbatch "--job-name=$JOB" "--nodes=$NODES" --ntasks-per-node=1 "--gpus-per-node=$GPUS")
[[ -z "$TIME" ]] || CMD+=("--time=$TIME")
CMD+=("${EXTRA[@]}" "$HERE/slurm.sbatch" "${ARGS[@]}")
run "${CMD[@]}"
