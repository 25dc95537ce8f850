#!/usr/bin/env bash
# Chaos monkey for the local cluster (scripts/cluster.sh): every INTERVAL
# seconds SIGKILL a random running node, restart it after PAUSE seconds;
# stops by itself after DURATION seconds (and restarts anything it killed).
# Only touches the local node processes recorded in .stack/<stack>/nodes/.
#
# Usage: scripts/chaos.sh [-i INTERVAL=10] [-d DURATION=60] [-p PAUSE=3] [--seed N]
#        (CHATTRIO_STACK selects the stack, default dev)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

INTERVAL=10 DURATION=60 PAUSE=3
while (($#)); do
  case "$1" in
    -i|--interval) INTERVAL="$2"; shift 2 ;;
    -d|--duration) DURATION="$2"; shift 2 ;;
    -p|--pause) PAUSE="$2"; shift 2 ;;
    --seed) RANDOM="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
