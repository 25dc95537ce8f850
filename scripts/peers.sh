# shellcheck shell=bash
# `make bench BENCH_ARGS=peers`: chattrio and Centrifugo on the same machine, measured by the same
# bot (chattrio/bot/centrifugo.py speaks Centrifugo's JSON client protocol). Sourced by
# scripts/bench.sh, whose stack, 3 nodes, `bot` and `settle` it uses.
#
# Centrifugo v6 is built once with `go install` (through the Go module proxy) into .cache/bin and
# runs as 3 nodes on the Redis engine, with a redis-server of its own; both are started here and
# stopped at the end. Users sign in with HS256 tokens (the bot signs them; chattrio's users sign
# in over REST); rooms are channels of a namespace with history (so every publication has an
# offset, the accounting's seq) and recovery, and client publishing. The bot spreads users over
# the 3 nodes of each system directly, without a load balancer.
#
# Seed, rooms and idle run against both systems, alternating: each seed step runs once per system
# before the next step, each rooms and idle round once per system. The records go to
# bench-results/peers-<time>.jsonl; the comparison (ratios chattrio / Centrifugo) is appended to
# $BENCH_LOG and written as a markdown table to bench-results/peers-<time>.md
# (python -m chattrio.bot.compare).
#
# Environment (all optional):
#   PEERS_BASE_PORT=BENCH_BASE_PORT+100   Centrifugo nodes on +1..+3, its Redis on +10
#   CENTRIFUGO_VERSION=v6.9.1
#   PEERS_PARTS="seed rooms idle"         which of the three scenarios run (the table leaves out
#                                         the figures of those that did not)
#   PEERS_ROUNDS=2                        rooms and idle runs per system; seed ramps per system
#   PEERS_SEED_NS="100 300 500 600 700 800 900 1000"
#                                         seed steps (N users in one room, 1 message/s each);
#                                         a system stops after 2 failures in a row; at 1,000 the
#                                         bot itself needs more than half the machine
#   PEERS_SEED_FIXED=300                  the N whose p99 is compared
#   PEERS_ROOMS_USERS=5000 PEERS_ROOMS_RAMP=60 PEERS_ROOMS_SECONDS=60
#   PEERS_IDLE_USERS=3000 PEERS_IDLE_RAMP=2 PEERS_IDLE_SECONDS=60 PEERS_IDLE_WINDOW=20
#                                         idle, scaled down from 60,000: on nodes just restarted
#                                         (so their RSS growth is the sessions' memory), these
#                                         users connect within the ramp (as fast as the servers
#                                         let them: the connect rate), then hold their sessions
#                                         for the seconds; the idle sessions' CPU is that of the
#                                         last WINDOW seconds, after the joins have gone through;
#                                         the users' keepalive (60 s) outlasts both systems'
#                                         25 s server pings, which are what is measured
#                                         (30,000 users, 10,000 per node, within 2 s: the bot's
#                                         connect timeout failed 64 % of chattrio's and 27 % of
#                                         Centrifugo's; the idle figures at 10,000 per node come
#                                         from IDLE_PER_NODE=10000 IDLE_RAMP=200 bench.sh idle)
#   PEERS_QUIET_SECONDS=20                CPU of nodes and services with no client at all
#   PEERS_CHATTRIO_AUTH=open              open: chattrio's users sign in over REST first; jwt: its
#                                         nodes restart in jwt mode (HS256) and the bot signs its
#                                         users' tokens, as it does Centrifugo's (no sign-in request)
#   PEERS_CENTRIFUGO_PRESENCE=off         on: Centrifugo's rooms also keep online presence and push
#                                         join and leave to their subscribers, as chattrio's rooms do
#                                         (chattrio's join and leave are also stored messages)

PEERS_BASE_PORT="${PEERS_BASE_PORT:-$((BASE_PORT + 100))}"
CENTRIFUGO_VERSION="${CENTRIFUGO_VERSION:-v6.9.1}"
CENTRIFUGO_BIN="$REPO/.cache/bin/centrifugo"
CF_DIR="$REPO/.stack/$CHATTRIO_STACK-centrifugo"
CF_REDIS_PORT=$((PEERS_BASE_PORT + 10))
# Known to the bot and to Centrifugo only, on this machine.
CF_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

install_centrifugo() {  # idempotent: the binary is kept in .cache/bin (git-ignored), its version
                        # beside it (a `go install`ed binary reports v0.0.0)
  if [[ -x "$CENTRIFUGO_BIN" && "$(cat "$CENTRIFUGO_BIN.version" 2>/dev/null)" == "$CENTRIFUGO_VERSION" ]]; then
    return 0
  fi
  command -v go >/dev/null 2>&1 || { log "peers: Go is needed to build Centrifugo"; return 1; }
  log "peers: building Centrifugo $CENTRIFUGO_VERSION with go install (minutes on 2 cores)"
  GOBIN="$REPO/.cache/bin" go install "github.com/centrifugal/centrifugo/v6@$CENTRIFUGO_VERSION"
  echo "$CENTRIFUGO_VERSION" > "$CENTRIFUGO_BIN.version"
}

centrifugo_config() {  # centrifugo_config I: node I's configuration file
  local i="$1" file="$CF_DIR/config-$1.json"
  cat > "$file" <<EOF
{
  "http_server": {"address": "127.0.0.1", "port": $((PEERS_BASE_PORT + i))},
  "pid_file": "$CF_DIR/nodes/node-$i.pid",
  "log": {"level": "error"},
  "engine": {"type": "redis", "redis": {"address": ["redis://127.0.0.1:$CF_REDIS_PORT"]}},
  "client": {"token": {"hmac_secret_key": "$CF_SECRET"}},
  "channel": {
    "namespaces": [{
      "name": "chat",
      "allow_subscribe_for_client": true,
      "allow_publish_for_subscriber": true,
      "history_size": 1000,
      "history_ttl": "300s",
      "allow_recovery": true$CF_PRESENCE_OPTIONS
    }]
  },
  "http_api": {"disabled": true},
  "prometheus": {"enabled": true},
  "usage_stats": {"disabled": true}
}
EOF
  echo "$file"
}

centrifugo_up() {
  mkdir -p "$CF_DIR/nodes" "$CF_DIR/redis"
  port_in_use "$CF_REDIS_PORT" && { log "peers: port $CF_REDIS_PORT (Centrifugo's Redis) is taken"; return 1; }
  redis-server --bind 127.0.0.1 --port "$CF_REDIS_PORT" --save "" --appendonly no --daemonize yes \
    --dir "$CF_DIR/redis" --pidfile "$CF_DIR/redis/redis.pid" --logfile "$CF_DIR/redis/redis.log"
  local i
  for i in 1 2 3; do
    port_in_use "$((PEERS_BASE_PORT + i))" && { log "peers: port $((PEERS_BASE_PORT + i)) is taken"; return 1; }
    (ulimit -n 65536 2>/dev/null || true
     exec setsid nohup "$CENTRIFUGO_BIN" --config "$(centrifugo_config "$i")" > "$CF_DIR/nodes/node-$i.log" 2>&1) &
  done
  for i in 1 2 3; do
    for _ in $(seq 100); do
      port_in_use "$((PEERS_BASE_PORT + i))" && break
      sleep 0.2
    done
  done
  log "peers: Centrifugo on 127.0.0.1:$((PEERS_BASE_PORT + 1))-$((PEERS_BASE_PORT + 3)), its Redis on $CF_REDIS_PORT"
}

peers_down() {  # stop what centrifugo_up started (bench.sh's exit calls it too), and wait until it
               # has exited, so that centrifugo_up can take the ports again at once
  local f pids=() pid
  for f in "$CF_DIR"/nodes/node-*.pid "$CF_DIR/redis/redis.pid"; do
    [[ -s "$f" ]] || continue
    pids+=("$(cat "$f")")
    kill "${pids[-1]}" 2>/dev/null || true
    rm -f "$f"
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  done
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

CHATTRIO_ARGS=("${NODE_ARGS[@]}")
for f in postgres/data/postmaster.pid redis/redis.pid kafka/kafka.pid; do
  CHATTRIO_ARGS+=(--service-pid-file "$REPO/.stack/$CHATTRIO_STACK/$f")
done
CHATTRIO_NODES_DIR="$NODES_DIR"
CHATTRIO_JWT_SECRET=""  # set in jwt mode: known to the bot and to chattrio's nodes only
case "${PEERS_CHATTRIO_AUTH:-open}" in
  open) ;;
  jwt)
    CHATTRIO_JWT_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    CHATTRIO_ARGS+=(--token-secret "$CHATTRIO_JWT_SECRET") ;;
  *) log "peers: PEERS_CHATTRIO_AUTH must be open or jwt, not '$PEERS_CHATTRIO_AUTH'"; exit 2 ;;
esac
CF_PRESENCE_OPTIONS=""  # added to the chat namespace's options
case "${PEERS_CENTRIFUGO_PRESENCE:-off}" in
  off) ;;
  on) CF_PRESENCE_OPTIONS=$',\n      "presence": true,\n      "join_leave": true,\n      "force_push_join_leave": true' ;;
  *) log "peers: PEERS_CENTRIFUGO_PRESENCE must be on or off, not '$PEERS_CENTRIFUGO_PRESENCE'"; exit 2 ;;
esac
CENTRIFUGO_ARGS=(--system centrifugo --centrifugo-secret "$CF_SECRET" --service-pid-file "$CF_DIR/redis/redis.pid")
for i in 1 2 3; do
  CENTRIFUGO_ARGS+=(--node "http://127.0.0.1:$((PEERS_BASE_PORT + i))" --pid-file "$CF_DIR/nodes/node-$i.pid")
done

restart_chattrio() {  # its nodes take up the environment's CHATTRIO_AUTH_MODE and CHATTRIO_SECRET
  local i
  for i in 1 2 3; do scripts/cluster.sh restart "$i" >/dev/null; done
}

set_or_unset() {  # set_or_unset NAME VALUE: export NAME=VALUE, or unset NAME when VALUE is empty
  if [[ -n "$2" ]]; then export "$1=$2"; else unset "$1"; fi
}

peers_bot() {  # peers_bot SYSTEM ARGS...: one run against chattrio or centrifugo, recorded in $PEERS_LOG
  local system="$1" rc=0
  shift
  if [[ "$system" == chattrio ]]; then
    NODE_ARGS=("${CHATTRIO_ARGS[@]}") NODES_DIR="$CHATTRIO_NODES_DIR"
  else
    NODE_ARGS=("${CENTRIFUGO_ARGS[@]}") NODES_DIR="$CF_DIR/nodes"
  fi
  log "peers: $system $* (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  BENCH_LOG="$PEERS_LOG" bot "$@" || rc=$?
  NODE_ARGS=("${CHATTRIO_ARGS[@]}") NODES_DIR="$CHATTRIO_NODES_DIR"
  return "$rc"
}

fresh_nodes() {  # fresh_nodes SYSTEM: restart its nodes; a node grown by earlier runs reuses its
                 # memory for new sessions, and its RSS growth says nothing per connection
  if [[ "$1" == chattrio ]]; then
    restart_chattrio
  else
    peers_down
    centrifugo_up
  fi
}

quiet_cost() {  # quiet_cost SYSTEM: the CPU of its nodes and services with no client, as a record
  local nodes=() services=()
  if [[ "$1" == chattrio ]]; then
    nodes=("$CHATTRIO_NODES_DIR"/node-*.pid)
    services=("$REPO/.stack/$CHATTRIO_STACK/postgres/data/postmaster.pid" "$REPO/.stack/$CHATTRIO_STACK/redis/redis.pid"
              "$REPO/.stack/$CHATTRIO_STACK/kafka/kafka.pid")
  else
    nodes=("$CF_DIR"/nodes/node-*.pid) services=("$CF_DIR/redis/redis.pid")
  fi
  NODES_DIR="$( [[ "$1" == chattrio ]] && echo "$CHATTRIO_NODES_DIR" || echo "$CF_DIR/nodes")" settle
  "$PY" -m chattrio.bot.compare quiet "$1" "${PEERS_QUIET_SECONDS:-20}" "${#nodes[@]}" "${nodes[@]}" "${services[@]}" >> "$PEERS_LOG"
}

peers_part() { [[ " ${PEERS_PARTS:-seed rooms idle} " == *" $1 "* ]]; }

peers_compare() {
  local stamp systems=(chattrio centrifugo) n r s rooms_users idle_users
  stamp="$(date -u +%Y%m%d-%H%M%S)"
  PEERS_LOG="$OUT/peers-$stamp.jsonl"
  mkdir -p "$OUT"
  install_centrifugo
  centrifugo_up
  local auth_before="${CHATTRIO_AUTH_MODE:-}" secret_before="${CHATTRIO_SECRET:-}"
  if [[ -n "$CHATTRIO_JWT_SECRET" ]]; then
    export CHATTRIO_AUTH_MODE=jwt CHATTRIO_SECRET="$CHATTRIO_JWT_SECRET"
    restart_chattrio
  fi
  # seed: each step once per system, until a system has failed 2 steps in a row
  for ((r = 1; r <= ${PEERS_ROUNDS:-2}; r++)); do
    peers_part seed || break
    declare -A misses=([chattrio]=0 [centrifugo]=0)
    for n in ${PEERS_SEED_NS:-100 300 500 600 700 800 900 1000}; do
      for s in "${systems[@]}"; do
        ((misses[$s] < 2)) || continue
        if peers_bot "$s" --scenario peers-seed --users "$n" --rooms 1 --rate 1 --duration 20 --ramp-up 5 \
            --loss-grace 10 --workers "$WORKERS" --max-p99-ms 500; then
          misses[$s]=0
        else
          misses[$s]=$((misses[$s] + 1))
        fi
      done
    done
    systems=("${systems[1]}" "${systems[0]}")  # the other system goes first next round
  done
  rooms_users="${PEERS_ROOMS_USERS:-5000}" idle_users="${PEERS_IDLE_USERS:-3000}"
  for ((r = 1; r <= ${PEERS_ROUNDS:-2}; r++)); do
    for s in "${systems[@]}"; do
      peers_part rooms || break
      peers_bot "$s" --scenario peers-rooms --users "$rooms_users" --rooms "$((rooms_users / 10))" --rate 0.2 \
        --duration "${PEERS_ROOMS_SECONDS:-60}" --ramp-up "${PEERS_ROOMS_RAMP:-60}" --loss-grace 15 \
        --workers "$ROOMS_WORKERS" --max-p99-ms 50 || true
    done
    for s in "${systems[@]}"; do
      peers_part idle || break
      fresh_nodes "$s"
      peers_bot "$s" --scenario peers-idle --users "$idle_users" --rooms "$((idle_users / 20))" --rate 0 \
        --duration "${PEERS_IDLE_SECONDS:-60}" --hold-window "${PEERS_IDLE_WINDOW:-20}" --ramp-up "${PEERS_IDLE_RAMP:-2}" \
        --keepalive 60 --loss-grace 0 --workers "$WORKERS" || true
      quiet_cost "$s"
    done
    systems=("${systems[1]}" "${systems[0]}")
  done
  peers_down
  if [[ -n "$CHATTRIO_JWT_SECRET" ]]; then  # later scenarios of this bench.sh run: as before
    set_or_unset CHATTRIO_AUTH_MODE "$auth_before"
    set_or_unset CHATTRIO_SECRET "$secret_before"
    restart_chattrio
  fi
  local command
  # The table's command names what shaped the run, the nodes' tunables of the message path too.
  command="$({ env | grep -E '^(PEERS_|CENTRIFUGO_VERSION=|CHATTRIO_(FANOUT_INTERVAL|KAFKA_LINGER)_MS=)' || true; } |
    sort | sed -E 's/=(.*)/="\1"/' | tr '\n' ' ')scripts/bench.sh peers"
  "$PY" -m chattrio.bot.compare table "$PEERS_LOG" "${PEERS_SEED_FIXED:-300}" "$command" > "$OUT/peers-$stamp.md"
  cat "$OUT/peers-$stamp.md"
  "$PY" -m chattrio.bot.compare record "$PEERS_LOG" "${PEERS_SEED_FIXED:-300}" "$command" >> "$BENCH_LOG"
  log "peers: records in $PEERS_LOG, the table in $OUT/peers-$stamp.md"
}
