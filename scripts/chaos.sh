#!/usr/bin/env bash
# Chaos on the local cluster.
#
# scripts/chaos.sh run TARGET FAULT [--seconds N]   one fault under load on the ha topology, with a verdict
# scripts/chaos.sh matrix [--doc FILE]               every target x every fault (`make chaos`)
#   TARGET: node | kafka | kafka-leader | kafka-controller | redis-primary | pg-primary
#   FAULT:  kill (SIGKILL, restarted after --kill-pause, 5 s) | stop (SIGSTOP for --stop-seconds, 20 s, then SIGCONT)
#   --tail S: chat S seconds after the fault ends (20); --loss-grace S: then wait S for late answers (15)
#   Starts the ha stack and 3 nodes (ports BASE+1..3, CHATTRIO_CHAOS_BASE_PORT, default 22400) when
#   they are not running, and stops what it started. docs/reliability.md tells the verdict's rules.
#   Exit 0 when every run passed.
#
# scripts/chaos.sh [monkey] [-i INTERVAL=10] [-d DURATION=60] [-p PAUSE=3] [--seed N]
#   every INTERVAL seconds SIGKILL a random running node of the cluster, restart it after PAUSE
#   seconds; stops by itself after DURATION seconds (and restarts anything it killed). Only
#   touches the local node processes recorded in .stack/<stack>/nodes/ (CHATTRIO_STACK, default dev).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

if [[ "${1:-}" == run || "${1:-}" == matrix ]]; then
  export CHATTRIO_STACK=ha CHATTRIO_PYTHON="${CHATTRIO_PYTHON:-$REPO/.venv/bin/python}"
  export CHATTRIO_TOPIC_PREFIX="${CHATTRIO_TOPIC_PREFIX:-chaos}"
  export CHATTRIO_SERVER_CMD="${CHATTRIO_SERVER_CMD:-$CHATTRIO_PYTHON -m chattrio serve}"
  # the probes sign up users and create rooms from this machine: exempt it from the per-IP limits,
  # also on nodes that a run restarts
  export CHATTRIO_LIMIT_EXEMPT="${CHATTRIO_LIMIT_EXEMPT:-127.0.0.1,::1}"
  base="${CHATTRIO_CHAOS_BASE_PORT:-22400}"
  ha_started=0 cluster_started=0
  finish() {
    local rc=$?
    trap '' INT TERM
    ((cluster_started)) && { CHATTRIO_STACK=ha "$SCRIPTS/cluster.sh" down || true; }
    ((ha_started)) && { "$SCRIPTS/ha.sh" down || true; }
    exit "$rc"
  }
  trap finish EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  if ! "$SCRIPTS/ha.sh" running; then ha_started=1; "$SCRIPTS/ha.sh" up; fi
  if [[ "$(CHATTRIO_STACK=ha "$SCRIPTS/cluster.sh" nodes 2>/dev/null | wc -l)" -lt 3 ]]; then
    cluster_started=1
    CHATTRIO_STACK=ha "$SCRIPTS/cluster.sh" up 3 --base-port "$base" --no-lb
  fi
  cd "$REPO"
  "$CHATTRIO_PYTHON" "$SCRIPTS/ha/chaos.py" "$@" --command-line "scripts/chaos.sh $*"
  exit $?
fi
[[ "${1:-}" == monkey ]] && shift

INTERVAL=10 DURATION=60 PAUSE=3
while (($#)); do
  case "$1" in
    -i|--interval) INTERVAL="$2"; shift 2 ;;
    -d|--duration) DURATION="$2"; shift 2 ;;
    -p|--pause) PAUSE="$2"; shift 2 ;;
    --seed) RANDOM="$2"; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done
for v in INTERVAL DURATION PAUSE; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a whole number of seconds"
done
((INTERVAL >= 1)) || die "INTERVAL must be >= 1"

CLUSTER="$SCRIPTS/cluster.sh"
"$CLUSTER" nodes >/dev/null || die "no cluster running for stack '$STACK'"

killed=""
finish() {
  trap '' INT TERM
  if [[ -n "$killed" ]]; then
    log "restarting node-$killed before exiting"
    "$CLUSTER" start "$killed" || true
  fi
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

end=$((SECONDS + DURATION))
kills=0
log "chaos: SIGKILL a random node every ${INTERVAL}s for ${DURATION}s (restart after ${PAUSE}s)"
while ((SECONDS < end)); do
  mapfile -t up < <("$CLUSTER" nodes | awk '{print $1}')
  if ((${#up[@]} == 0)); then
    warn "no running node to kill"
  else
    victim="${up[RANDOM % ${#up[@]}]}"
    killed="$victim"
    "$CLUSTER" kill "$victim"
    kills=$((kills + 1))
    sleep "$PAUSE"
    "$CLUSTER" start "$victim" || warn "node-$victim failed to come back"
    killed=""
  fi
  left=$((end - SECONDS))
  ((left > 0)) || break
  sleep $((INTERVAL < left ? INTERVAL : left))
done
log "chaos done: $kills kill(s)"
