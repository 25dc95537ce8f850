# shellcheck shell=bash disable=SC2034
# Shared helpers for the local-stack scripts. Source it, don't run it.
#
# Stack selection: CHATTRIO_STACK=dev (default), test or ha (scripts/ha.sh). Ports can be
# overridden with CHATTRIO_PG_PORT, CHATTRIO_REDIS_PORT, CHATTRIO_KAFKA_PORT,
# CHATTRIO_KAFKA_CONTROLLER_PORT.

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPTS="$REPO/scripts"
STACK="${CHATTRIO_STACK:-dev}"
# `make ... TOPOLOGY=ha` means the ha stack unless a stack is named (make test names its own)
[[ -z "${CHATTRIO_STACK:-}" && "${TOPOLOGY:-}" == ha ]] && STACK=ha
STACK_ROOT="$REPO/.stack"
SERVICES=(postgres redis kafka)
PG_OS_USER="${CHATTRIO_PG_OS_USER:-chattrio}"
# The ha topology's Patroni, from PyPI into a virtualenv of its own (scripts/install.sh, docs/ha.md)
PATRONI_VERSION=4.0.11
PATRONI_VENV="$REPO/.cache/patroni-$PATRONI_VERSION"
PATRONI_BIN="$PATRONI_VENV/bin/patroni"

case "$STACK" in
  dev)  _pg=55432 _redis=56379 _kafka=59092 _ctrl=59093 ;;
  test) _pg=55442 _redis=56389 _kafka=59102 _ctrl=59103 ;;
  # scripts/ha.sh: several members per service, all ports in scripts/ha/ports.sh; these are the first
  ha)   _pg=57431 _redis=57461 _kafka=57491 _ctrl=57496 ;;
  *)
    if [[ -z "${CHATTRIO_PG_PORT:-}" || -z "${CHATTRIO_REDIS_PORT:-}" || -z "${CHATTRIO_KAFKA_PORT:-}" || -z "${CHATTRIO_KAFKA_CONTROLLER_PORT:-}" ]]; then
      echo "error: unknown CHATTRIO_STACK='$STACK' (use dev or test, or set all CHATTRIO_*_PORT variables)" >&2
      exit 2
    fi
    _pg='' _redis='' _kafka='' _ctrl='' ;;
esac
if [[ ! "$STACK" =~ ^[A-Za-z0-9_-]+$ ]]; then
  echo "error: invalid CHATTRIO_STACK='$STACK'" >&2; exit 2
fi
PG_PORT="${CHATTRIO_PG_PORT:-$_pg}"
REDIS_PORT="${CHATTRIO_REDIS_PORT:-$_redis}"
KAFKA_PORT="${CHATTRIO_KAFKA_PORT:-$_kafka}"
KAFKA_CONTROLLER_PORT="${CHATTRIO_KAFKA_CONTROLLER_PORT:-$_ctrl}"
unset _pg _redis _kafka _ctrl

STACK_DIR="$STACK_ROOT/$STACK"
KAFKA_CLASSPATH_FILE="$STACK_ROOT/kafka-classpath.txt"

# ---------------------------------------------------------------- output

if [[ -t 2 ]]; then _c_b=$'\e[1m' _c_r=$'\e[31m' _c_y=$'\e[33m' _c_0=$'\e[0m'; else _c_b='' _c_r='' _c_y='' _c_0=''; fi
log()  { echo "${_c_b}[$(basename "$0") $STACK]${_c_0} $*" >&2; }
warn() { echo "${_c_y}[$(basename "$0") $STACK] warning:${_c_0} $*" >&2; }
die()  { echo "${_c_r}[$(basename "$0") $STACK] error:${_c_0} $*" >&2; exit 1; }

is_root() { [[ "$(id -u)" == 0 ]]; }

# ---------------------------------------------------------------- binaries

pg_bindir() {
  if [[ -n "${PG_BIN:-}" ]]; then echo "$PG_BIN"; return; fi
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
  if [[ -n "$d" && -x "$d/initdb" ]]; then echo "$d"; return; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
  if command -v pg_config >/dev/null 2>&1 && [[ -x "$(pg_config --bindir)/initdb" ]]; then pg_config --bindir; return; fi
  return 1
}

need_bin() {  # need_bin NAME [hint]
  command -v "$1" >/dev/null 2>&1 || die "required binary '$1' not found${2:+ ($2)}; run scripts/install.sh"
}

# ---------------------------------------------------------------- processes / ports

pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

cmdline_of() { tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null || true; }

# pid_matches PID SUBSTRING: the process exists and its command line contains SUBSTRING.
# A live process's command line reads empty while it rewrites its title (Redis and Sentinel do,
# once, at startup), so an empty one is read again before the answer is no; a zombie's stays empty.
pid_matches() {
  local pid="$1" needle="$2" cmd=""
  for _ in 1 2 3 4 5; do
    pid_alive "$pid" || return 1
    cmd="$(cmdline_of "$pid")"
    [[ -n "$cmd" ]] && break
    sleep 0.05
  done
  [[ "$cmd" == *"$needle"* ]]
}

read_pid() { [[ -s "$1" ]] && head -n1 "$1" | tr -dc '0-9' || true; }

port_open() {  # something accepts TCP connections on 127.0.0.1:PORT
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

port_owner() {  # best-effort description of who listens on PORT
  if command -v ss >/dev/null 2>&1; then
    ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:(\(.*\))/\1/p' | head -n1
  fi
}

port_taken_error() {  # port_taken_error SERVICE PORT VAR
  local who; who="$(port_owner "$2")"
  die "port $2 needed by $1 (stack '$STACK') is already in use by another process${who:+: $who}. Stop that process or pick another port with $3=<port>."
}

wait_port() {  # wait_port PORT TIMEOUT_SECONDS [PID]
  local port="$1" t="$2" pid="${3:-}" i
  for ((i = 0; i < t * 5; i++)); do
    port_open "$port" && return 0
    if [[ -n "$pid" ]] && ! pid_alive "$pid"; then return 1; fi
    sleep 0.2
  done
  return 1
}

# The stack's ports lie in Linux's ephemeral range (32768-60999): while a service is down, a
# client's outgoing connection (or a reconnecting client connected to itself) can be given its
# port as a source port, and the service then fails to start with "Address already in use"
# (seen once in CI when a test restarted Kafka). Reserving the ports keeps the kernel from
# handing them out; it needs root and is skipped without.
RESERVED_PORTS_FILE="${CHATTRIO_RESERVED_PORTS_FILE:-/proc/sys/net/ipv4/ip_local_reserved_ports}"
reserve_service_ports() {  # reserve_service_ports PORT...
  [[ -w "$RESERVED_PORTS_FILE" ]] || return 0
  local current wanted p
  current="$(cat "$RESERVED_PORTS_FILE")"
  wanted="$current"
  for p in "$@"; do wanted="${wanted:+$wanted,}$p"; done
  echo "$wanted" > "$RESERVED_PORTS_FILE" 2>/dev/null || warn "could not reserve ports $* in $RESERVED_PORTS_FILE"
}

wait_port_free() {  # wait_port_free PORT TIMEOUT_SECONDS
  local i
  for ((i = 0; i < $2 * 5; i++)); do port_open "$1" || return 0; sleep 0.2; done
  return 1
}

# stop_pid PID TIMEOUT [SIGNAL]: SIGNAL (default TERM), wait, then SIGKILL
stop_pid() {
  local pid="$1" t="$2" sig="${3:-TERM}" i
  pid_alive "$pid" || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < t * 5; i++)); do pid_alive "$pid" || return 0; sleep 0.2; done
  warn "pid $pid did not exit after ${t}s, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do pid_alive "$pid" || return 0; sleep 0.1; done
  return 1
}

# ---------------------------------------------------------------- misc

file_hash() { sha256sum "$@" 2>/dev/null | sha256sum | cut -c1-16; }

# Make DIR and all its ancestors traversable by USER (postgres runs as a
# non-root user and needs to reach its data dir inside the repo; mktemp -d
# parents are 0700). Only the o+x bit is added, never read permission.
ensure_traversable() {
  local user="$1" dir="$2"
  runuser -u "$user" -- test -x "$dir" 2>/dev/null && return 0
  local d="$dir"
  while [[ "$d" != "/" ]]; do
    d="$(dirname "$d")"
    if ! runuser -u "$user" -- test -x "$d" 2>/dev/null; then
      log "granting o+x on $d so user '$user' can reach $dir"
      chmod o+x "$d"
    fi
  done
  if ! runuser -u "$user" -- test -x "$dir" 2>/dev/null; then chmod o+x "$dir"; fi
}

print_env() {
  if [[ "$STACK" == ha ]]; then
    source "$SCRIPTS/ha/ports.sh"; ha_print_env; return
  fi
  cat <<EOF
export CHATTRIO_PG_DSN=postgresql://chattrio:chattrio@127.0.0.1:$PG_PORT/chattrio
export CHATTRIO_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
export CHATTRIO_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT
export CHATTRIO_STACK=$STACK
export CHATTRIO_REPO=$REPO
export CHATTRIO_STACK_DIR=$STACK_DIR
EOF
}

# ---------------------------------------------------------------- sessions
# `make run` / `make test` are sessions on a stack. Several may share one stack
# (e.g. two `make test` in the same tree). Each registers a lease; services a
# session had to start are recorded in .sessions/owned; the last session to
# leave stops them. Services that were already running (a manual
# `scripts/stack.sh up`) are never stopped by a session.
SESSIONS_DIR="$STACK_DIR/.sessions"

session_begin() {  # start the stack (all services) for this session
  mkdir -p "$SESSIONS_DIR"
  exec 8>"$STACK_DIR/.sessions.lock"
  flock 8
  echo "$0" > "$SESSIONS_DIR/$$"
  local s
  for s in "${SERVICES[@]}"; do
    "$SCRIPTS/stack.sh" running "$s" 8>&- || echo "$s" >> "$SESSIONS_DIR/owned"
  done
  [[ -f "$SESSIONS_DIR/owned" ]] && sort -u -o "$SESSIONS_DIR/owned" "$SESSIONS_DIR/owned"
  "$SCRIPTS/stack.sh" up 8>&-
  exec 8>&-
}

# session_end [CMD...]: leave; if this was the last session, run CMD (e.g.
# cluster.sh down) and stop the services sessions started.
session_end() {
  [[ -d "$SESSIONS_DIR" ]] || return 0
  exec 8>"$STACK_DIR/.sessions.lock"
  flock 8
  rm -f "$SESSIONS_DIR/$$"
  local f others=0
  for f in "$SESSIONS_DIR"/[0-9]*; do
    [[ -e "$f" ]] || continue
    if pid_alive "$(basename "$f")"; then others=$((others + 1)); else rm -f "$f"; fi
  done
  if ((others > 0)); then
    log "stack '$STACK' is still used by $others other session(s); leaving it running"
  else
    if (($#)); then "$@" 8>&- || true; fi
    if [[ -s "$SESSIONS_DIR/owned" ]]; then
      local owned
      mapfile -t owned < "$SESSIONS_DIR/owned"
      "$SCRIPTS/stack.sh" down "${owned[@]}" 8>&- || true
    fi
    rm -f "$SESSIONS_DIR/owned"
  fi
  exec 8>&-
}
