#!/usr/bin/env bash
# `make bench`: start a dedicated local stack and 3 nodes, run the load-bot scenarios, append one
# JSON record per run to bench-results/runs.jsonl, then stop what it started. See docs/bot.md;
# docs/benchmarks.md describes the scenarios and the current results.
#
# Usage: scripts/bench.sh [receive] [seed] [rooms] [failover] [idle] [rooms-rates] [peers] [typing]
#   (default: the first five, in that order)
#   receive: the bot's own receive path in one process (frames/s), no server involved
#   rooms-rates: the rooms scenario at several message rates, for the largest one that keeps
#                zero loss and p99 <= 50 ms on this machine (how far the rooms target is)
#   peers: seed, rooms and idle against chattrio and Centrifugo v6 alternately, with ratios
#          (scripts/peers.sh: its settings, and the Centrifugo it builds and starts)
#   typing: the same chat without and with TYPING frames (TYPING_USERS=1000 in rooms of 10,
#           0.1 messages/s, TYPING_RATE=1 frame/s per user, 60 s): the CPU of the nodes and of
#           the backing services, apart, in each run's serverCpu (what typing costs)
# Environment (all optional):
#   BENCH_STACK=bench           stack name; "bench" gets its own ports (PG 55562, Redis 56509,
#                               Kafka 59522/59523) so it never touches the dev or test stacks
#   BENCH_BASE_PORT=18500       nodes on BASE+1..BASE+3, nginx on BENCH_LB_PORT (18500)
#   BENCH_OUT=bench-results     JSON and HTML reports
#   BENCH_LOG=bench-results/runs.jsonl   one JSON record per run (JSON Lines)
#   BENCH_WORKERS=2             bot worker processes (seed, failover; idle uses twice as many)
#   ROOMS_WORKERS=1             bot worker processes in rooms and rooms-rates: one process reads
#                               more frames per wake-up, needs 0.1 core less and gave the lower
#                               p99 (docs/decisions/bench-method.md)
#   SEED_START=50 SEED_STEP=50 SEED_MAX=500    seed: N from START by STEP up to MAX,
#   SEED_PATIENCE=2                            until that many steps in a row fail
#   ROOMS_USERS=5000 ROOMS_RAMP=60             rooms scenario size and ramp-up
#   ROOMS_RATES="0.01 0.05 0.1 0.2"            rooms-rates: messages per second per user
#   IDLE_VIA_LB=0                              idle: 1 connects every user through nginx (BENCH_LB_PORT)
#                                              from enough loopback source addresses for them all
#   IDLE_HOLD=10                               idle: seconds every user stays connected after the ramp;
#                                              the bot's CPU figures of the nodes cover this hold
#                                              (90 or more spans several of the nodes' 25 s pings)
#   IDLE_PER_NODE=20000 IDLE_RAMP=1000         idle: connections per node, ramp-up seconds (60,000
#                                              users at 60/s: each new user costs the servers
#                                              ~14 ms of CPU here, and 250/s timed most out)
#   FAILOVER_USERS=100
#   BENCH_WARMUP=1              when this script starts Kafka itself, one unrecorded rooms-shaped
#                               run first (its JVM is slow until it has compiled)
#   SETTLE_MAX=120              before each run: the leave grace, then up to this long for the
#                               nodes to go quiet (under 0.05 core each for 3 s)
#   BOT_NICE=-10                the bot runs in its own session whose scheduler autogroup gets this
#                               niceness (as root): the nodes and Kafka saturate the cores, and with
#                               autogroups a plain `nice` does not help against other sessions, so a
#                               starved bot would measure its own lag instead of the servers'
# Exit status: non-zero when a run other than a seed step failed its thresholds.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"

export CHATTRIO_STACK="${BENCH_STACK:-bench}"
if [[ "$CHATTRIO_STACK" == bench ]]; then
  export CHATTRIO_PG_PORT="${CHATTRIO_PG_PORT:-55562}" CHATTRIO_REDIS_PORT="${CHATTRIO_REDIS_PORT:-56509}"
  export CHATTRIO_KAFKA_PORT="${CHATTRIO_KAFKA_PORT:-59522}" CHATTRIO_KAFKA_CONTROLLER_PORT="${CHATTRIO_KAFKA_CONTROLLER_PORT:-59523}"
fi
# The bot signs up thousands of users and creates hundreds of rooms from this machine: exempt it
# from the per-IP limits and the room quota (docs/security.md); its frames stay limited.
export CHATTRIO_LIMIT_EXEMPT="${CHATTRIO_LIMIT_EXEMPT:-127.0.0.1,::1}"
BASE_PORT="${BENCH_BASE_PORT:-18500}"
LB_PORT="${BENCH_LB_PORT:-18500}"
OUT="${BENCH_OUT:-bench-results}"
BENCH_LOG="${BENCH_LOG:-$OUT/runs.jsonl}"
WORKERS="${BENCH_WORKERS:-2}"
ROOMS_WORKERS="${ROOMS_WORKERS:-1}"
PY="$REPO/.venv/bin/python"
SCENARIOS=("$@")
((${#SCENARIOS[@]})) || SCENARIOS=(receive seed rooms failover idle)

log() { echo "[bench.sh $CHATTRIO_STACK] $*" >&2; }

scripts/install.sh

started=()
cleanup() {
  local rc=$?
  trap '' INT TERM
  if declare -F peers_down >/dev/null; then peers_down; fi
  scripts/cluster.sh down >/dev/null 2>&1 || true
  if ((${#started[@]})); then scripts/stack.sh down "${started[@]}" || true; fi
  log "done, exit $rc"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for s in postgres redis kafka; do
  scripts/stack.sh running "$s" || started+=("$s")
done
scripts/stack.sh up
scripts/cluster.sh up 3 --base-port "$BASE_PORT" --lb-port "$LB_PORT"

NODES_DIR="$REPO/.stack/$CHATTRIO_STACK/nodes"
NODE_ARGS=()
for i in 1 2 3; do
  NODE_ARGS+=(--node "http://127.0.0.1:$((BASE_PORT + i))" --pid-file "$NODES_DIR/node-$i.pid")
done

settle() {  # wait until the nodes are quiet, so a run measures neither their start-up nor the
            # previous run's departures (announced after the leave grace, then fanned out)
  sleep "$(( ${CHATTRIO_LEAVE_GRACE_SECONDS:-15} + 2 ))"
  "$PY" - "$NODES_DIR" "${SETTLE_MAX:-120}" <<'PY'
import os, sys, time
nodes_dir, limit = sys.argv[1], float(sys.argv[2])
pids = [open(os.path.join(nodes_dir, name)).read().strip() for name in os.listdir(nodes_dir) if name.endswith(".pid")]
def cpu_seconds():
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")
started = time.monotonic()
quiet = 0
while quiet < 3 and time.monotonic() - started < limit:
    before = cpu_seconds()
    time.sleep(1)
    quiet = quiet + 1 if cpu_seconds() - before < 0.05 * len(pids) else 0
state = "quiet" if quiet >= 3 else "still busy"
print(f"[bench.sh] nodes {state} after {time.monotonic() - started:.0f} s", file=sys.stderr)
PY
}

bot() {  # bot ARGS...: one run, reports in $OUT, a record in $BENCH_LOG (none with ROW=0); returns
         # the bot's status
  local rc=0 row=(--bench-log "$BENCH_LOG")
  [[ "${ROW:-1}" == 1 ]] || row=()
  settle
  setsid -w bash -c 'echo "$0" > /proc/self/autogroup 2>/dev/null || true; exec nice -n "$0" "$@"' \
    "${BOT_NICE:--10}" "$PY" -m chattrio bot "${NODE_ARGS[@]}" --out "$OUT" "${row[@]}" "$@" || rc=$?
  return "$rc"
}

seed_overrides() {  # the SEED_* settings of this run that differ from the defaults, as a command prefix
  local var
  for var in SEED_START SEED_STEP SEED_MAX SEED_PATIENCE; do
    [[ -n "${!var:-}" ]] && printf '%s=%s ' "$var" "${!var}"
  done
  return 0
}

append_note_row() {  # append_note_row SCENARIO RESULT COMMAND: a result that is not one bot run
  mkdir -p "$(dirname "$BENCH_LOG")"
  "$PY" - "$1" "$2" "$3" "$(git rev-parse --short HEAD)" >> "$BENCH_LOG" <<'PY'
import datetime, json, os, sys
scenario, result, command, commit = sys.argv[1:]
cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
print(json.dumps({"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"), "commit": commit,
                  "machine": {"cores": os.cpu_count(), "cpu": cpu}, "scenario": scenario, "result": result,
                  "command": command}))
PY
}

warm_up_kafka() {  # a Kafka this script just started is slow until its JVM has compiled the hot
                  # paths (rooms p99 51-766 ms in the first run after a start, 21-36 ms after):
                  # load it once, with the rooms shape, before anything is recorded
  [[ " ${started[*]} " == *" kafka "* && "${BENCH_WARMUP:-1}" == 1 ]] || return 0
  log "warming up the Kafka just started (BENCH_WARMUP=0 skips this; nothing is recorded)"
  ROW=0 bot --scenario warm-up --users 5000 --rooms 500 --rate 0.2 --duration 30 --ramp-up 30 --loss-grace 5 \
    --workers "$ROOMS_WORKERS" >/dev/null || true
}

failed=0
[[ " ${SCENARIOS[*]} " == " receive " ]] || warm_up_kafka
for scenario in "${SCENARIOS[@]}"; do
  case "$scenario" in
    receive)
      line="$("$PY" -m chattrio bot --receive-bench)"
      log "$line"
      append_note_row "receive (bot)" "$line" "python -m chattrio bot --receive-bench"
      ;;
    seed)
      # A step can fail on a noisy machine: stop after SEED_PATIENCE failures in a row.
      best=0 misses=0
      for ((n = ${SEED_START:-50}; n <= ${SEED_MAX:-500}; n += ${SEED_STEP:-50})); do
        log "seed: N=$n"
        if bot --scenario seed --users "$n" --rooms 1 --rate 1 --duration 20 --ramp-up 5 --loss-grace 10 \
            --workers "$WORKERS" --max-p99-ms 500; then
          best=$n misses=0
        else
          misses=$((misses + 1))
          ((misses < ${SEED_PATIENCE:-2})) || break
        fi
      done
      log "seed: largest N with zero loss and p99 <= 500 ms: $best"
      append_note_row "seed (result)" "largest N with zero loss and p99 <= 500 ms: $best (target 300, goal 500)" \
        "$(seed_overrides)scripts/bench.sh seed"
      ;;
    rooms)
      users="${ROOMS_USERS:-5000}"
      bot --scenario rooms --users "$users" --rooms "$((users / 10))" --rate 0.2 --duration 60 \
        --ramp-up "${ROOMS_RAMP:-60}" --loss-grace 30 --workers "$ROOMS_WORKERS" --max-p99-ms 50 || failed=1
      ;;
    rooms-rates)
      users="${ROOMS_USERS:-5000}" best=none
      for rate in ${ROOMS_RATES:-0.01 0.05 0.1 0.2}; do
        log "rooms-rates: $rate messages/s per user"
        if bot --scenario rooms-rate --users "$users" --rooms "$((users / 10))" --rate "$rate" --duration 60 \
            --ramp-up "${ROOMS_RAMP:-60}" --loss-grace 30 --workers "$ROOMS_WORKERS" --max-p99-ms 50; then
          best=$rate
        fi
      done
      log "rooms-rates: largest rate with zero loss and p99 <= 50 ms: $best"
      append_note_row "rooms-rates (result)" \
        "largest rate per user with zero loss and p99 <= 50 ms: $best (the rooms scenario is 0.2)" \
        "$([[ -n "${ROOMS_RATES:-}" ]] && printf 'ROOMS_RATES="%s" ' "$ROOMS_RATES")scripts/bench.sh rooms-rates"
      ;;
    idle)
      # A node holds the sessions its descriptor hard limit leaves room for (at most 20,000):
      # past that it answers 503 rather than run out of descriptors for Kafka, PostgreSQL and Redis.
      per_node="${IDLE_PER_NODE:-$("$REPO/.venv/bin/python" -c "import resource
from chattrio.config import Settings
from chattrio.nursery.descriptors import sessions_within
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
print(sessions_within(1 << 20 if hard == resource.RLIM_INFINITY else hard, Settings()))")}" via=()
      # ~28,000 ephemeral ports per source address towards nginx's one port: one address per 20,000
      [[ "${IDLE_VIA_LB:-0}" == 1 ]] \
        && via=(--via "http://127.0.0.1:$LB_PORT" --source-addresses "$((per_node * 3 / 20000 + 1))")
      # Thresholds are moot without messages; a refusal ends the ramp (--stop-on-refusal). Rooms of
      # 20 keep the join messages' fan-out small (30 rooms of 2,000 meant tens of millions of frames).
      # The users' keepalive outlasts the nodes' 25 s ping: the nodes' pings are what is measured.
      bot --scenario idle --users "$((per_node * 3))" --rooms "$((per_node * 3 / 20))" --rate 0 --duration "${IDLE_HOLD:-10}" \
        --keepalive 60 \
        --ramp-up "${IDLE_RAMP:-1000}" --loss-grace 0 --workers "$((WORKERS * 2))" --stop-on-refusal "${via[@]}" \
        || failed=1
      ;;
    failover)
      # Node 2 is SIGKILLed 10 s into the chat; its users must resume on nodes 1 and 3.
      bot --scenario failover --users "${FAILOVER_USERS:-100}" --rooms 1 --rate 1 --duration 20 --ramp-up 5 \
        --loss-grace 15 --workers "$WORKERS" --exec "scripts/cluster.sh kill 2" --exec-at 10 || failed=1
      scripts/cluster.sh start 2
      ;;
    typing)
      # The backing services' pid files make the report count their CPU apart from the nodes'.
      users="${TYPING_USERS:-1000}" services=()
      for f in postgres/data/postmaster.pid redis/redis.pid kafka/kafka.pid; do
        services+=(--service-pid-file "$REPO/.stack/$CHATTRIO_STACK/$f")
      done
      for typing_rate in 0 "${TYPING_RATE:-1}"; do
        log "typing: $typing_rate TYPING frames/s per user"
        bot --scenario "typing-$typing_rate" --users "$users" --rooms "$((users / 10))" --rate 0.1 --duration 60 \
          --ramp-up 30 --loss-grace 15 --workers "$ROOMS_WORKERS" --typing-rate "$typing_rate" "${services[@]}" \
          || failed=1
      done
      ;;
    peers)
      # shellcheck source=scripts/peers.sh
      source scripts/peers.sh
      peers_compare
      ;;
    *)
      log "unknown scenario '$scenario' (receive, seed, rooms, failover, idle, rooms-rates, peers, typing)"; exit 2 ;;
  esac
done
exit "$failed"
