#!/usr/bin/env bash
# AMBER pretraining as an xpk workload on a GKE cluster of TPU slices (xpk: pip install xpk).
#
#   launch/gke_xpk.sh [--dry-run] --cluster CLUSTER [--workload NAME] [--project P] [--zone Z]
#       [--tpu-type v5litepod-256] [--num-slices 1] [--docker-image IMAGE | --base-docker-image
#       IMAGE] [--storage NAME] [--config configs/base.py] [--workdir DIR] [--max-restarts 10]
#       [-- TRAIN_ARGS...]
#
# With --docker-image, the image must have amber-jax and jax[tpu] installed; otherwise xpk builds
# one from --base-docker-image (default python:3.11-slim) and this checkout (--script-dir), and
# the command installs amber-jax first. Every pod runs `amber-jax train`; JAX reads the TPU worker
# list that GKE sets (amber_jax.parallel.cluster: TPU branch). --workdir must be shared by all
# pods: a bucket URL (gs://BUCKET/runs/NAME, nothing to attach), or a path on an xpk storage that
# --storage attaches (e.g. a Filestore volume made with `xpk storage attach`).
# --num-slices N also goes to the run as --config.mesh.num_slices=N (amber_jax.parallel.mesh: a
# DCN axis across the slices).
# Preemption: GKE sends the pods SIGTERM; the run saves a checkpoint and exits 75, and JobSet
# restarts the workload (up to --max-restarts times), which resumes from that checkpoint. A run
# that fails otherwise (exit 1, 2, 74) is restarted too and fails the same way: read its first
# log (docs/RELIABILITY.md).
# --dry-run prints the xpk command.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
source "$HERE/_common.sh"

CLUSTER= PROJECT= ZONE= IMAGE= STORAGE= WORKDIR=
WORKLOAD=amber-jax-$(date +%m%d-%H%M%S)
TPU=v5litepod-256
SLICES=1
RESTARTS=10
BASE_IMAGE=python:3.11-slim
CONFIG=configs/base.py
ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --cluster) CLUSTER=$2; shift ;;          --cluster=*) CLUSTER=${1#*=} ;;
    --workload) WORKLOAD=$2; shift ;;        --workload=*) WORKLOAD=${1#*=} ;;
    --project) PROJECT=$2; shift ;;          --project=*) PROJECT=${1#*=} ;;
    --zone) ZONE=$2; shift ;;                --zone=*) ZONE=${1#*=} ;;
    --tpu-type) TPU=$2; shift ;;             --tpu-type=*) TPU=${1#*=} ;;
    --num-slices) SLICES=$2; shift ;;        --num-slices=*) SLICES=${1#*=} ;;
    --docker-image) IMAGE=$2; shift ;;       --docker-image=*) IMAGE=${1#*=} ;;
    --base-docker-image) BASE_IMAGE=$2; shift ;; --base-docker-image=*) BASE_IMAGE=${1#*=} ;;
    --storage) STORAGE=$2; shift ;;          --storage=*) STORAGE=${1#*=} ;;
    --config) CONFIG=$2; shift ;;            --config=*) CONFIG=${1#*=} ;;
    --workdir) WORKDIR=$2; shift ;;          --workdir=*) WORKDIR=${1#*=} ;;
    --max-restarts) RESTARTS=$2; shift ;;    --max-restarts=*) RESTARTS=${1#*=} ;;
    -h|--help) usage; exit 0 ;;
    --) shift; ARGS=("$@"); break ;;
    *) die "unknown option $1 (arguments for amber-jax train go after --)" ;;
  esac
  shift
done
need cluster "$CLUSTER"
[[ "$SLICES" =~ ^[1-9][0-9]*$ ]] || die "--num-slices must be a positive integer; got '$SLICES'"
[[ "$RESTARTS" =~ ^[0-9]+$ ]] || die "--max-restarts must be an integer >= 0; got '$RESTARTS'"
JAX_VERSION=$(sed -n 's/.*"jax==\([^"]*\)".*/\1/p' "$REPO/pyproject.toml" | head -n 1)

TRAIN=(amber-jax train "--config=$CONFIG")
[[ -z "$WORKDIR" ]] || TRAIN+=("--config.workdir=$WORKDIR")
TRAIN+=("$(mesh_args "$SLICES")" "${ARGS[@]}")   # ICI inside a slice, DCN across slices
COMMAND=$(show "${TRAIN[@]}")
CMD=(xpk workload create "--cluster=$CLUSTER" "--workload=$WORKLOAD" "--tpu-type=$TPU"
     "--num-slices=$SLICES" "--max-restarts=$RESTARTS")
if [[ -n "$IMAGE" ]]; then
  CMD+=("--docker-image=$IMAGE")
else
  CMD+=("--base-docker-image=$BASE_IMAGE" "--script-dir=$REPO")
  COMMAND="pip install -q -e . 'jax[tpu]==$JAX_VERSION' && $COMMAND"
fi
[[ -z "$PROJECT" ]] || CMD+=("--project=$PROJECT")
[[ -z "$ZONE" ]] || CMD+=("--zone=$ZONE")
[[ -z "$STORAGE" ]] || CMD+=("--storage=$STORAGE")
CMD+=("--command=$COMMAND")
run "${CMD[@]}"
