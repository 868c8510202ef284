#!/usr/bin/env bash
# N amber-jax processes on this machine, joined by jax.distributed over 127.0.0.1 (CPU devices).
#
#   launch/local_multiprocess.sh [--dry-run] [-n N] [--devices-per-process D] [--port P]
#       [--log-dir DIR] [-- AMBER_JAX_ARGS...]
#
# Each process gets AMBER_COORDINATOR=127.0.0.1:P, AMBER_NUM_PROCESSES=N, AMBER_PROCESS_ID=i and
# D CPU devices (XLA_FLAGS), so the run sees N*D devices over N processes, as on a pod. The
# arguments after -- go to amber-jax (default: train --config=configs/tiny.py). The program is
# $AMBER_JAX split on spaces (default: amber-jax), e.g. AMBER_JAX='python -m amber_jax.parallel.cluster' checks that
# the processes connect. Logs: DIR/process-i.log (default: a new temporary folder); the script
# waits for all and exits non-zero if any failed.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/_common.sh"

N=2
DEVICES=2
PORT=${AMBER_COORDINATOR_PORT:-}
LOG_DIR=
ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    -n|--num-processes) N=$2; shift ;;
    --num-processes=*) N=${1#*=} ;;
    --devices-per-process) DEVICES=$2; shift ;;
    --devices-per-process=*) DEVICES=${1#*=} ;;
    --port) PORT=$2; shift ;;
    --port=*) PORT=${1#*=} ;;
    --log-dir) LOG_DIR=$2; shift ;;
    --log-dir=*) LOG_DIR=${1#*=} ;;
    -h|--help) usage; exit 0 ;;
    --) shift; ARGS=("$@"); break ;;
    *) die "unknown option $1 (arguments for amber-jax go after --)" ;;
  esac
  shift
done
[[ "$N" =~ ^[1-9][0-9]*$ ]] || die "-n must be a positive integer; got '$N'"
[[ "$DEVICES" =~ ^[1-9][0-9]*$ ]] || die "--devices-per-process must be a positive integer; got '$DEVICES'"
[[ ${#ARGS[@]} -gt 0 ]] || ARGS=(train --config=configs/tiny.py)
if [[ -z "$PORT" ]]; then
  PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
read -r -a PROGRAM <<< "${AMBER_JAX:-amber-jax}"
[[ -n "$LOG_DIR" || "$DRY_RUN" == 1 ]] || LOG_DIR=$(mktemp -d -t amber-jax-local.XXXXXX)

PIDS=()
for ((i = 0; i < N; i++)); do
  CMD=(env AMBER_COORDINATOR="127.0.0.1:$PORT" AMBER_NUM_PROCESSES="$N" AMBER_PROCESS_ID="$i"
       JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=$DEVICES"
       "${PROGRAM[@]}" "${ARGS[@]}")
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "$(show "${CMD[@]}") > process-$i.log 2>&1 &"
  else
    mkdir -p "$LOG_DIR"
    "${CMD[@]}" > "$LOG_DIR/process-$i.log" 2>&1 &
    PIDS+=($!)
  fi
done
[[ "$DRY_RUN" == 1 ]] && { echo wait; exit 0; }
echo "Started $N processes (coordinator 127.0.0.1:$PORT); logs in $LOG_DIR" >&2
STATUS=0
declare -A INDEX
for i in "${!PIDS[@]}"; do INDEX[${PIDS[$i]}]=$i; done
while [[ ${#INDEX[@]} -gt 0 ]]; do
  # The next process to end; if it failed, the others would wait for it forever: stop them.
  wait -n -p DONE "${!INDEX[@]}" && OK=1 || OK=0
  i=${INDEX[$DONE]}
  unset "INDEX[$DONE]"
  [[ $OK == 1 ]] && continue
  echo "process $i failed; last lines of $LOG_DIR/process-$i.log:" >&2
  tail -n 20 "$LOG_DIR/process-$i.log" >&2
  STATUS=1
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  break
done
[[ $STATUS == 0 ]] && tail -n 3 "$LOG_DIR/process-0.log"
exit $STATUS
