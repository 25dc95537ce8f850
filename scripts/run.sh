#!/usr/bin/env bash
# `make run`: install what is missing, start the dev stack, build the web
# client, then run chattrio in the foreground until Ctrl-C.
#   scripts/run.sh            one node on $PORT (default 8080)
#   scripts/run.sh N          N nodes on 8081..8080+N behind nginx on $PORT
#   TOPOLOGY=ha scripts/run.sh N   the same on the ha stack (scripts/ha.sh) instead of the dev stack
# Ctrl-C stops everything this script started (services that were already
# running before, or are still used by another make run/test, are left alone).
set -euo pipefail
case "${TOPOLOGY:-single}" in
  single) ;;
  ha) export CHATTRIO_STACK=ha ;;
  *) echo "error: TOPOLOGY must be single or ha, got '$TOPOLOGY'" >&2; exit 2 ;;
esac
source "$(dirname "$0")/lib.sh"

NODES="${1:-${NODES:-1}}"
PORT="${PORT:-8080}"
HOST="${HOST:-127.0.0.1}"
[[ "$NODES" =~ ^[0-9]+$ && "$NODES" -ge 1 ]] || die "NODES must be a positive integer, got '$NODES'"
# A local run accepts the public default secret (dev mode) unless a secret is given.
[[ -n "${CHATTRIO_SECRET:-}" ]] || export CHATTRIO_DEV_MODE="${CHATTRIO_DEV_MODE:-1}"

"$SCRIPTS/install.sh"

cluster_started=0
cleaned=0
# The ha stack has no sessions: this run stops it at the end only if it started it.
ha_started=0
stack_begin() {
  if [[ "$STACK" != ha ]]; then session_begin; return; fi
  "$SCRIPTS/ha.sh" running || ha_started=1
  "$SCRIPTS/ha.sh" up
}
stack_end() {
  if [[ "$STACK" != ha ]]; then session_end; return; fi
  if ((ha_started)); then "$SCRIPTS/ha.sh" down || true; fi
}
cleanup() {
  local rc=$?
  ((cleaned)) && return; cleaned=1
  trap '' INT TERM   # a second Ctrl-C must not interrupt the cleanup
  echo >&2
  if ((cluster_started)); then "$SCRIPTS/cluster.sh" down || true; fi
  stack_end
  log "stopped"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 0' INT   # Ctrl-C is the normal way to stop `make run`
trap 'exit 143' TERM

stack_begin   # stack.sh up (remembers what it started) or ha.sh up

if [[ -f "$REPO/web/package.json" ]]; then
  "$SCRIPTS/web.sh" build || warn "web client build failed; the server runs without a fresh web/dist"
fi

eval "$(print_env)"
if ((NODES == 1)); then
  port_open "$PORT" && port_taken_error "chattrio" "$PORT" "PORT"
  export CHATTRIO_NODE_ID=node-1
  extra=(); [[ -n "${LOG_JSON:-}" ]] && extra+=(--log-json)
  if [[ "$STACK" == ha ]]; then  # the ha stack's Prometheus scrapes this node as cluster.sh's node-1
    mkdir -p "$STACK_DIR/nodes"
    "$SCRIPTS/cluster.sh" scrape-targets 1 $((PORT - 1)) "$STACK_DIR/nodes/scrape-targets.json"
  fi
  log "chattrio serve on http://$HOST:$PORT (Ctrl-C to stop)"
  cd "$REPO"
  set +e
  read -r -a server_cmd <<< "${CHATTRIO_SERVER_CMD:-$REPO/.venv/bin/python -m chattrio serve}"
  "${server_cmd[@]}" --host "$HOST" --port "$PORT" --node-id node-1 "${extra[@]}"
  rc=$?
  set -e
  exit "$rc"
else
  cluster_started=1
  extra=(); [[ -n "${LOG_JSON:-}" ]] && extra+=(--log-json)
  "$SCRIPTS/cluster.sh" up "$NODES" --base-port "$PORT" --lb-port "$PORT" --host "$HOST" "${extra[@]}"
  log "$NODES nodes behind nginx on http://127.0.0.1:$PORT -- tailing logs (Ctrl-C to stop)"
  mapfile -t logs < <("$SCRIPTS/cluster.sh" logs)
  tail -n 5 -F "${logs[@]}" || true
fi
