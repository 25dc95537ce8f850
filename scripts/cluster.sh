#!/usr/bin/env bash
# N chattrio nodes in the background (sharing the stack of CHATTRIO_STACK)
# plus nginx in front of them when N > 1.
#
# Usage: scripts/cluster.sh up N [--base-port P] [--lb-port L] [--host H] [--log-json] [--no-lb]
#            node i (1..N) listens on P+i (default P=8080 -> 8081..), nginx on L (default 8080)
#        scripts/cluster.sh down              stop nginx and all nodes
#        scripts/cluster.sh kill I            SIGKILL node I (chaos)
#        scripts/cluster.sh stop I            graceful stop (SIGTERM) of node I
#        scripts/cluster.sh start I           start node I again, wait for /readyz
#        scripts/cluster.sh restart I         stop (if running) + start node I
#        scripts/cluster.sh status            nodes, pids, /readyz
#        scripts/cluster.sh logs              print the log file paths
#        scripts/cluster.sh nginx-conf N P L  write nginx.conf for N nodes on P+1.. behind L, print its path
#        scripts/cluster.sh scrape-targets N P FILE  write Prometheus's targets for N nodes on P+1.. to FILE
# The backing stack must be up (scripts/stack.sh up). Node logs and pid files
# live in .stack/<stack>/nodes/, nginx in .stack/<stack>/nginx/ (CHATTRIO_NGINX_DIR).
# Node i's internal port (/metrics, /readyz) is its port + 10000, the node's default.
# CHATTRIO_SERVER_CMD overrides the server command
# (default: "<repo>/.venv/bin/python -m chattrio serve").
set -euo pipefail
source "$(dirname "$0")/lib.sh"

NODES_DIR="$STACK_DIR/nodes"
STATE="$NODES_DIR/cluster.env"
NGINX_DIR="${CHATTRIO_NGINX_DIR:-$STACK_DIR/nginx}"
NGINX_CONF="$NGINX_DIR/nginx.conf"
NGINX_PIDFILE="$NGINX_DIR/nginx.master.pid"
READY_TIMEOUT="${CHATTRIO_NODE_READY_TIMEOUT:-60}"
SERVER_CMD_STR="${CHATTRIO_SERVER_CMD:-}"
# A local run accepts the public default secret (dev mode) unless a secret is given.
[[ -n "${CHATTRIO_SECRET:-}" ]] || export CHATTRIO_DEV_MODE="${CHATTRIO_DEV_MODE:-1}"
INTERNAL_PORT_OFFSET=10000  # the node's default (chattrio/config.py)
NODE_MAX_CONNECTIONS="${CHATTRIO_MAX_CONNECTIONS:-20000}"

load_state() {
  [[ -f "$STATE" ]] || die "no cluster for stack '$STACK' (run: scripts/cluster.sh up N)"
  local env_cmd="$SERVER_CMD_STR"
  # shellcheck disable=SC1090
  source "$STATE"
  # the command given at `up` time is reused by start/restart unless overridden
  if [[ -n "$env_cmd" ]]; then SERVER_CMD_STR="$env_cmd"; fi
}

node_port() { echo $((BASE_PORT + $1)); }
node_internal_port() { echo $((BASE_PORT + $1 + INTERNAL_PORT_OFFSET)); }
node_pidfile() { echo "$NODES_DIR/node-$1.pid"; }
node_log() { echo "$NODES_DIR/node-$1.log"; }
node_pid() { read_pid "$(node_pidfile "$1")"; }
node_running() { pid_matches "$(node_pid "$1")" "--node-id node-$1 "; }
node_ready() {
  [[ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$(node_internal_port "$1")/readyz" 2>/dev/null)" == 200 ]]
}

check_index() {
  [[ "$1" =~ ^[0-9]+$ ]] && (($1 >= 1 && $1 <= NODES)) || die "node index must be 1..$NODES, got '$1'"
}

start_node() {
  local i="$1" port pid log
  port="$(node_port "$i")"; log="$(node_log "$i")"
  if node_running "$i"; then return 0; fi
  port_open "$port" && port_taken_error "node-$i" "$port" "--base-port"
  port_open "$(node_internal_port "$i")" && port_taken_error "node-$i (internal)" "$(node_internal_port "$i")" "--base-port"
  local SERVER_CMD
  read -r -a SERVER_CMD <<< "${SERVER_CMD_STR:-$REPO/.venv/bin/python -m chattrio serve}"
  [[ -x "${SERVER_CMD[0]}" ]] || command -v "${SERVER_CMD[0]}" >/dev/null 2>&1 \
    || die "server command '${SERVER_CMD[0]}' not found; run scripts/install.sh"
  local extra=()
  [[ "${LOG_JSON:-0}" == 1 ]] && extra+=(--log-json)
  [[ -f "$log" ]] && mv -f "$log" "$log.1"
  (
    eval "$(print_env)"
    export CHATTRIO_NODE_ID="node-$i"
    # nginx on this machine appends the client's address to X-Forwarded-For: believe it
    [[ "${LB:-no}" == yes ]] && export CHATTRIO_TRUSTED_PROXIES="${CHATTRIO_TRUSTED_PROXIES:-127.0.0.1}"
    cd "$REPO"
    # a node is meant to hold 20,000 connections: lift the descriptor limit as far as allowed
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    exec setsid nohup "${SERVER_CMD[@]}" --host "$HOST" --port "$port" --internal-port "$(node_internal_port "$i")" \
      --node-id "node-$i" "${extra[@]}" \
      </dev/null >"$log" 2>&1 8>&- 9>&-
  ) &
  pid=$!
  echo "$pid" > "$(node_pidfile "$i")"
  log "node-$i starting on $HOST:$port (pid $pid, log $log)"
}

wait_node_ready() {
  local i="$1" n
  for ((n = 0; n < READY_TIMEOUT * 5; n++)); do
    node_ready "$i" && return 0
    if ! node_running "$i"; then
      tail -n 30 "$(node_log "$i")" >&2 || true
      die "node-$i exited during startup (log: $(node_log "$i"))"
    fi
    sleep 0.2
  done
  tail -n 30 "$(node_log "$i")" >&2 || true
  die "node-$i: GET /readyz did not answer 200 within ${READY_TIMEOUT}s (log: $(node_log "$i"))"
}

# signal the node's whole process group (it runs in its own session)
signal_node() {
  local pid="$2"
  kill "-$1" -- "-$pid" 2>/dev/null || kill "-$1" "$pid" 2>/dev/null || true
}

stop_node() {  # stop_node I SIGNAL
  local i="$1" sig="$2" pid n
  node_running "$i" || { rm -f "$(node_pidfile "$i")"; return 0; }
  pid="$(node_pid "$i")"
  signal_node "$sig" "$pid"
  for ((n = 0; n < 100; n++)); do pid_alive "$pid" || break; sleep 0.1; done
  if pid_alive "$pid"; then
    warn "node-$i (pid $pid) did not exit after SIG$sig, sending SIGKILL"
    signal_node KILL "$pid"
    for ((n = 0; n < 50; n++)); do pid_alive "$pid" || break; sleep 0.1; done
  fi
  # reap stragglers of the group (workers) as well
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$(node_pidfile "$i")"
}

# Prometheus file_sd targets, every node's internal port: the ha topology's prometheus member
# (scripts/ha.sh) reads $NODES_DIR/scrape-targets.json. Written whole, then renamed: Prometheus
# re-reads it on change and must never see half of it.
write_scrape_targets() {  # write_scrape_targets FILE
  local i sep="" json="["
  for ((i = 1; i <= NODES; i++)); do
    json+="$sep{\"targets\": [\"127.0.0.1:$(node_internal_port "$i")\"], \"labels\": {\"node\": \"node-$i\"}}"
    sep=", "
  done
  echo "$json]" > "$1.tmp"
  mv -f "$1.tmp" "$1"
}

nginx_bin() { command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || return 1; }
nginx_pid() { read_pid "$NGINX_PIDFILE"; }
nginx_running() { pid_matches "$(nginx_pid)" "$NGINX_CONF"; }

NGINX_SPARE_FILES=1024  # a worker's descriptors besides its connections: logs, listeners, temp files
# every node full of WebSockets, two connections each, plus room for plain requests
nginx_connections_needed() { echo $((2 * NODE_MAX_CONNECTIONS * NODES + 1024)); }
nginx_descriptor_hard_limit() { local hard; hard="$(ulimit -Hn)"; [[ "$hard" == unlimited ]] && hard=1048576; echo "$hard"; }
# Each worker may hold every connection, as far as the descriptor hard limit allows (raising it
# needs CAP_SYS_RESOURCE: an unprivileged or containerised nginx keeps the limit it inherits).
nginx_worker_nofile() {
  local want=$(($(nginx_connections_needed) + NGINX_SPARE_FILES)) hard; hard="$(nginx_descriptor_hard_limit)"
  echo $((want < hard ? want : hard))
}
nginx_worker_connections() { echo $(($(nginx_worker_nofile) - NGINX_SPARE_FILES)); }
# One worker per core when one can hold everything; under a lower limit, as many workers as it
# takes, a tenth more for the kernel's uneven spread of new connections over them (reuseport).
nginx_worker_processes() {
  local needed per cores; needed="$(nginx_connections_needed)" per="$(nginx_worker_connections)"
  if ((per >= needed)); then echo auto; return; fi
  cores="$(nproc)"
  local workers=$(((needed * 11 / 10 + per - 1) / per))
  echo $((workers > cores ? workers : cores))
}

# Write $NGINX_CONF for NODES nodes, and create its log files readable by their owner only
# (nginx keeps the mode of a log file that exists).
render_nginx_conf() {
  mkdir -p "$NGINX_DIR/tmp"
  local ups="" i user_line=""
  for ((i = 1; i <= NODES; i++)); do
    ups+="        server 127.0.0.1:$(node_port "$i") max_fails=3 fail_timeout=5s;"$'\n'
  done
  is_root && user_line="user root;"
  local tmpl="$SCRIPTS/nginx.conf.tmpl"
  [[ -f "$tmpl" ]] || die "missing $tmpl"
  awk -v ups="$ups" -v prefix="$NGINX_DIR" -v port="$LB_PORT" -v host="$LB_HOST" -v userline="$user_line" \
      -v conns="$(nginx_worker_connections)" -v nofile="$(nginx_worker_nofile)" -v workers="$(nginx_worker_processes)" '
    /^@UPSTREAMS@$/ { printf "%s", ups; next }
    { gsub(/@PREFIX@/, prefix); gsub(/@LB_PORT@/, port); gsub(/@LB_HOST@/, host); gsub(/@USER_LINE@/, userline)
      gsub(/@WORKER_CONNECTIONS@/, conns); gsub(/@WORKER_RLIMIT_NOFILE@/, nofile); gsub(/@WORKER_PROCESSES@/, workers); print }
  ' "$tmpl" > "$NGINX_CONF"
  (umask 077 && touch "$NGINX_DIR/access.log" "$NGINX_DIR/error.log")
  chmod 600 "$NGINX_DIR/access.log" "$NGINX_DIR/error.log"
}

start_nginx() {
  local bin; bin="$(nginx_bin)" || die "nginx not found; run scripts/install.sh (apt-get install nginx-light)"
  if nginx_running; then return 0; fi
  port_open "$LB_PORT" && port_taken_error nginx "$LB_PORT" "--lb-port"
  render_nginx_conf
  [[ "$(nginx_worker_processes)" == auto ]] \
    || log "descriptor hard limit $(nginx_descriptor_hard_limit): nginx runs $(nginx_worker_processes) workers of $(nginx_worker_connections) connections each"
  "$bin" -t -q -p "$NGINX_DIR/" -e "$NGINX_DIR/error.log" -c "$NGINX_CONF" \
    || die "generated nginx config is invalid: $NGINX_CONF"
  setsid nohup "$bin" -p "$NGINX_DIR/" -e "$NGINX_DIR/error.log" -c "$NGINX_CONF" </dev/null >>"$NGINX_DIR/nginx.out" 2>&1 8>&- 9>&- &
  echo $! > "$NGINX_PIDFILE"
  wait_port "$LB_PORT" 10 "$!" || { tail -n 20 "$NGINX_DIR/error.log" >&2 || true; die "nginx did not start (log: $NGINX_DIR/error.log)"; }
  log "nginx on $LB_HOST:$LB_PORT -> nodes $(node_port 1)..$(node_port "$NODES")"
}

stop_nginx() {
  nginx_running || { rm -f "$NGINX_PIDFILE"; return 0; }
  stop_pid "$(nginx_pid)" 10 TERM
  rm -f "$NGINX_PIDFILE"
}

cmd="${1:-status}"; shift || true
case "$cmd" in
  up)
    [[ $# -ge 1 && "$1" =~ ^[0-9]+$ && "$1" -ge 1 ]] || die "usage: cluster.sh up N [--base-port P] [--lb-port L] [--host H] [--log-json] [--no-lb]"
    NODES="$1"; shift
    BASE_PORT=8080 LB_PORT=8080 HOST=127.0.0.1 LB_HOST=127.0.0.1 LOG_JSON=0 LB=auto
    while (($#)); do
      case "$1" in
        --base-port) BASE_PORT="$2"; shift 2 ;;
        --lb-port) LB_PORT="$2"; shift 2 ;;
        --host) HOST="$2"; shift 2 ;;
        --lb-host) LB_HOST="$2"; shift 2 ;;
        --log-json) LOG_JSON=1; shift ;;
        --no-lb) LB=no; shift ;;
        --lb) LB=yes; shift ;;
        *) die "unknown option $1" ;;
      esac
    done
    [[ "$LB" == auto ]] && { ((NODES > 1)) && LB=yes || LB=no; }
    if [[ -f "$STATE" ]]; then
      # refuse to silently change the shape of a running cluster
      old_nodes="$(sed -n 's/^NODES=//p' "$STATE")"; old_base="$(sed -n 's/^BASE_PORT=//p' "$STATE")"
      if [[ "$old_nodes" != "$NODES" || "$old_base" != "$BASE_PORT" ]]; then
        running=0
        for ((i = 1; i <= old_nodes; i++)); do
          ( NODES=$old_nodes BASE_PORT=$old_base; node_running "$i" ) && running=1
        done
        ((running)) && die "a cluster with $old_nodes node(s) on base port $old_base is running; run scripts/cluster.sh down first"
      fi
    fi
    if [[ "$STACK" == ha ]]; then
      "$SCRIPTS/ha.sh" running || die "the ha stack is not fully running (see scripts/ha.sh status; run scripts/ha.sh up)"
    else
      for s in "${SERVICES[@]}"; do
        "$SCRIPTS/stack.sh" running "$s" || die "stack '$STACK' service $s is not running (run scripts/stack.sh up)"
      done
    fi
    mkdir -p "$NODES_DIR"
    printf 'NODES=%s\nBASE_PORT=%s\nLB_PORT=%s\nHOST=%s\nLB_HOST=%s\nLOG_JSON=%s\nLB=%s\nSERVER_CMD_STR=%q\n' \
      "$NODES" "$BASE_PORT" "$LB_PORT" "$HOST" "$LB_HOST" "$LOG_JSON" "$LB" "$SERVER_CMD_STR" > "$STATE"
    write_scrape_targets "$NODES_DIR/scrape-targets.json"
    for ((i = 1; i <= NODES; i++)); do start_node "$i"; done
    for ((i = 1; i <= NODES; i++)); do wait_node_ready "$i"; done
    [[ "$LB" == yes ]] && start_nginx
    log "cluster up: $NODES node(s) on $(node_port 1)..$(node_port "$NODES")$( [[ $LB == yes ]] && echo ", nginx on $LB_PORT")"
    ;;
  down)
    [[ -f "$STATE" ]] || exit 0
    load_state
    stop_nginx
    for ((i = 1; i <= NODES; i++)); do
      node_running "$i" && log "stopping node-$i"
      stop_node "$i" TERM
    done
    ;;
  kill)
    load_state; check_index "${1:-}"
    node_running "$1" || { warn "node-$1 is not running"; exit 0; }
    log "SIGKILL node-$1 (pid $(node_pid "$1"))"
    stop_node "$1" KILL ;;
  stop)
    load_state; check_index "${1:-}"
    log "stopping node-$1"
    stop_node "$1" TERM ;;
  start)
    load_state; check_index "${1:-}"
    start_node "$1"; wait_node_ready "$1"
    log "node-$1 ready" ;;
  restart)
    load_state; check_index "${1:-}"
    stop_node "$1" TERM; start_node "$1"; wait_node_ready "$1"
    log "node-$1 ready" ;;
  status)
    [[ -f "$STATE" ]] || { echo "no cluster for stack '$STACK'"; exit 1; }
    load_state
    rc=0
    for ((i = 1; i <= NODES; i++)); do
      if node_running "$i"; then
        r="not ready"; node_ready "$i" && r=ready || rc=1
        printf 'node-%-3s up    pid %-7s %s:%-5s %s\n' "$i" "$(node_pid "$i")" "$HOST" "$(node_port "$i")" "$r"
      else
        printf 'node-%-3s down                %s:%-5s\n' "$i" "$HOST" "$(node_port "$i")"; rc=1
      fi
    done
    if [[ "$LB" == yes ]]; then
      if nginx_running; then printf 'nginx    up    pid %-7s %s:%s\n' "$(nginx_pid)" "$LB_HOST" "$LB_PORT"
      else printf 'nginx    down                %s:%s\n' "$LB_HOST" "$LB_PORT"; rc=1; fi
    fi
    exit "$rc" ;;
  nodes)  # machine-readable: "I PORT PID" per running node
    load_state
    for ((i = 1; i <= NODES; i++)); do node_running "$i" && echo "$i $(node_port "$i") $(node_pid "$i")"; done
    exit 0 ;;
  nginx-conf)
    [[ $# -eq 3 && "$1$2$3" =~ ^[0-9]+$ ]] || die "usage: cluster.sh nginx-conf NODES BASE_PORT LB_PORT"
    NODES="$1" BASE_PORT="$2" LB_PORT="$3" LB_HOST=127.0.0.1
    render_nginx_conf
    echo "$NGINX_CONF"
    exit 0 ;;
  scrape-targets)
    [[ $# -eq 3 && "$1$2" =~ ^[0-9]+$ ]] || die "usage: cluster.sh scrape-targets NODES BASE_PORT FILE"
    NODES="$1" BASE_PORT="$2"
    write_scrape_targets "$3"
    exit 0 ;;
  logs)
    load_state
    for ((i = 1; i <= NODES; i++)); do node_log "$i"; done
    [[ "$LB" == yes ]] && echo "$NGINX_DIR/error.log"
    exit 0 ;;
  *)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2 ;;
esac
