#!/usr/bin/env bash
# AMBER pretraining on a Cloud TPU VM slice (one host or a pod slice of many).
#
#   launch/tpu_pod.sh [--dry-run] --name NAME --zone ZONE [--project P]
#       [--accelerator v5litepod-16] [--version RUNTIME] [--queued] [--spot]
#       [--config configs/base.py] --workdir gs://BUCKET/PATH [--step create|setup|data|train|delete|all]
#       [-- TRAIN_ARGS...]
#
# Steps (default all = create, setup, train):
#   create  gcloud compute tpus tpu-vm create (or, with --queued, queued-resources create and wait
#           until the slice is ACTIVE);
#   setup   copy this checkout (git archive HEAD) to every worker, make .venv, install amber-jax
#           with jax[tpu];
#   data    build the Django corpus and vocabulary on every worker (the same on each);
#   train   amber-jax train on every worker at once (--worker=all); JAX finds the other hosts
#           itself (amber_jax.parallel.cluster: TPU VM branch);
#   delete  delete the slice (or the queued resource).
# The workdir must be one folder that every worker sees, best a bucket (--workdir
# gs://BUCKET/runs/NAME; the workers' service account needs write access to it) or a shared
# mount: all hosts write each checkpoint together. --dry-run prints the commands.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
source "$HERE/_common.sh"

NAME= ZONE= PROJECT= VERSION= QUEUED=0 SPOT=0 STEP=all
ACCEL=v5litepod-16
CONFIG=configs/base.py
WORKDIR=
ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --name) NAME=$2; shift ;;            --name=*) NAME=${1#*=} ;;
    --zone) ZONE=$2; shift ;;            --zone=*) ZONE=${1#*=} ;;
    --project) PROJECT=$2; shift ;;      --project=*) PROJECT=${1#*=} ;;
    --accelerator) ACCEL=$2; shift ;;    --accelerator=*) ACCEL=${1#*=} ;;
    --version) VERSION=$2; shift ;;      --version=*) VERSION=${1#*=} ;;
    --config) CONFIG=$2; shift ;;        --config=*) CONFIG=${1#*=} ;;
    --workdir) WORKDIR=$2; shift ;;      --workdir=*) WORKDIR=${1#*=} ;;
    --step) STEP=$2; shift ;;            --step=*) STEP=${1#*=} ;;
    --queued) QUEUED=1 ;;
    --spot) SPOT=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; ARGS=("$@"); break ;;
    *) die "unknown option $1 (arguments for amber-jax train go after --)" ;;
  esac
  shift
done
need name "$NAME"
need zone "$ZONE"
case "$STEP" in create|setup|data|train|delete|all) ;; *)
  die "--step must be create, setup, data, train, delete or all; got '$STEP'" ;; esac
if [[ -z "$WORKDIR" && ( "$STEP" == train || "$STEP" == all ) && " ${ARGS[*]-} " != *" --config.workdir="* ]]; then
  die "--workdir is required to train: a folder every worker sees, e.g. gs://BUCKET/runs/base (without it each worker would checkpoint to its own ~/.cache)"
fi
if [[ -z "$VERSION" ]]; then   # the TPU runtime image that matches the chip generation
  case "$ACCEL" in
    v5litepod-*|v5e-*) VERSION=v2-alpha-tpuv5-lite ;;
    v5p-*) VERSION=v2-alpha-tpuv5 ;;
    v6e-*) VERSION=v2-alpha-tpuv6e ;;
    *) VERSION=tpu-ubuntu2204-base ;;
  esac
fi
JAX_VERSION=$(sed -n 's/.*"jax==\([^"]*\)".*/\1/p' "$REPO/pyproject.toml" | head -n 1)
COMMON=("--zone=$ZONE")
[[ -z "$PROJECT" ]] || COMMON+=("--project=$PROJECT")
SPOT_FLAG=()
[[ "$SPOT" == 0 ]] || SPOT_FLAG=(--spot)
on_all_workers() {   # on_all_workers 'shell command': run it on every host of the slice
  run gcloud compute tpus tpu-vm ssh "$NAME" --worker=all "${COMMON[@]}" --command="$1"
}

create() {
  if [[ "$QUEUED" == 1 ]]; then
    run gcloud compute tpus queued-resources create "$NAME" --node-id="$NAME" "${COMMON[@]}" \
      --accelerator-type="$ACCEL" --runtime-version="$VERSION" "${SPOT_FLAG[@]}"
    local describe=(gcloud compute tpus queued-resources describe "$NAME" "${COMMON[@]}"
                    --format='value(state.state)')
    if [[ "$DRY_RUN" == 1 ]]; then
      echo "# wait until this prints ACTIVE: $(show "${describe[@]}")"
    else
      until [[ "$("${describe[@]}")" == ACTIVE ]]; do sleep 30; done
    fi
  else
    run gcloud compute tpus tpu-vm create "$NAME" "${COMMON[@]}" --accelerator-type="$ACCEL" \
      --version="$VERSION" "${SPOT_FLAG[@]}"
  fi
}

setup() {
  local tarball=/tmp/amber-jax-$NAME.tar.gz
  run git -C "$REPO" archive --format=tar.gz -o "$tarball" HEAD
  run gcloud compute tpus tpu-vm scp "$tarball" "$NAME:~/amber-jax.tar.gz" --worker=all \
    "${COMMON[@]}"
  on_all_workers "mkdir -p ~/amber-jax && tar -xzf ~/amber-jax.tar.gz -C ~/amber-jax && cd ~/amber-jax && python3 -m venv .venv && .venv/bin/pip install -q -e . 'jax[tpu]==$JAX_VERSION'"
}

data() {
  on_all_workers "cd ~/amber-jax && .venv/bin/amber-jax data build django && .venv/bin/amber-jax vocab train"
}

train() {
  local cmd=(.venv/bin/amber-jax train "--config=$CONFIG")
  [[ -z "$WORKDIR" ]] || cmd+=("--config.workdir=$WORKDIR")
  cmd+=("$(mesh_args 1)" "${ARGS[@]}")   # one slice (multislice: launch/gke_xpk.sh)
  on_all_workers "cd ~/amber-jax && $(show "${cmd[@]}")"
}

delete() {
  if [[ "$QUEUED" == 1 ]]; then
    run gcloud compute tpus queued-resources delete "$NAME" "${COMMON[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$NAME" "${COMMON[@]}" --quiet
  fi
}

case "$STEP" in
  all) create; setup; train ;;
  *) "$STEP" ;;
esac
