#!/usr/bin/env bash
# The high-availability stack as plain local processes, data under .stack/ha/<member>/:
#   etcd-1..3        etcd cluster, the store Patroni keeps its leader lock in
#   pg-1, pg-2       Patroni, each running one PostgreSQL (a primary and a synchronous standby)
#   redis-1, redis-2 a Redis primary and its replica
#   sentinel-1..3    Redis Sentinels (quorum 2) watching them
#   kafka-1..3       KRaft nodes, each broker and controller (a 3-voter quorum)
#   prometheus       Prometheus scraping the nodes scripts/cluster.sh starts (compose/'s config and alerts)
#
# Usage: scripts/ha.sh up              start every member (idempotent), wait until ready
#        scripts/ha.sh down            stop every member (idempotent)
#        scripts/ha.sh status          every member, its pid and its current role; exit 0 if all are up
#        scripts/ha.sh env             print `export CHATTRIO_...` lines for nodes on this stack
#        scripts/ha.sh kill MEMBER     SIGKILL a member (pg-N: Patroni and its PostgreSQL)
#        scripts/ha.sh start MEMBER    start one member again, wait until it answers
#        scripts/ha.sh stop MEMBER     stop one member gracefully
#        scripts/ha.sh signal MEMBER SIG  send SIG (STOP, CONT, ...) to the member's processes
#                                      (pg-N: Patroni, its postmaster and the postmaster's children)
#        scripts/ha.sh running         exit 0 if every member runs (quiet)
#        scripts/ha.sh members         list the members
#        scripts/ha.sh wipe            down + delete .stack/ha
# Ports: see scripts/ha/ports.sh (all in 574xx).
set -euo pipefail
export CHATTRIO_STACK=ha
source "$(dirname "$0")/lib.sh"
source "$SCRIPTS/ha/ports.sh"

HA_KAFKA_HEAP="${CHATTRIO_HA_KAFKA_HEAP:--Xms128m -Xmx384m}"
HA_START_TIMEOUT="${CHATTRIO_HA_START_TIMEOUT:-180}"
PYTHON="${CHATTRIO_PYTHON:-$REPO/.venv/bin/python}"

mdir() { echo "$STACK_DIR/$1"; }
mlog() { echo "$STACK_DIR/$1/$1.log"; }
mpidfile() { echo "$STACK_DIR/$1/$1.pid"; }
mpid() { read_pid "$(mpidfile "$1")"; }
# The member's config file is on its command line: that tells our process from a reused pid.
mconf() {
  case "$1" in
    etcd-*) echo "--name $1 " ;;
    pg-*) echo "$STACK_DIR/$1/patroni.yml" ;;
    # Redis replaces its command line with its address once started
    redis-*|sentinel-*) echo "redis-server" ;;
    kafka-*) echo "$STACK_DIR/$1/server.properties" ;;
    prometheus) echo "$STACK_DIR/$1/prometheus.yml" ;;
  esac
}
mrunning() { pid_matches "$(mpid "$1")" "$(mconf "$1")"; }
idx() { echo "${1##*-}"; }

# Start a member's process in its own session; its pid goes to the pid file.
spawn() {  # spawn MEMBER CMD...
  local m="$1"; shift
  local log; log="$(mlog "$m")"
  [[ -f "$log" ]] && mv -f "$log" "$log.1"
  setsid nohup "$@" </dev/null >"$log" 2>&1 8>&- 9>&- &
  echo $! > "$(mpidfile "$m")"
}

wait_for() {  # wait_for MEMBER WHAT CHECK...: until CHECK passes or the member exits
  local m="$1" what="$2"; shift 2
  local i
  for ((i = 0; i < HA_START_TIMEOUT * 2; i++)); do
    "$@" && return 0
    if ! mrunning "$m"; then tail -n 30 "$(mlog "$m")" >&2; die "$m exited during startup (log: $(mlog "$m"))"; fi
    sleep 0.5
  done
  tail -n 30 "$(mlog "$m")" >&2
  die "$m: $what not reached within ${HA_START_TIMEOUT}s (log: $(mlog "$m"))"
}

check_port_free() {  # check_port_free MEMBER PORT
  port_open "$2" && port_taken_error "$1" "$2" "CHATTRIO_HA_PORT_BASE"
  return 0
}

# ================================================================ etcd
etcd_cluster() {
  local i out=""
  for i in 1 2 3; do out+="${out:+,}etcd-$i=http://127.0.0.1:$(etcd_peer_port "$i")"; done
  echo "$out"
}
etcd_ready() { curl -sf -m 2 "http://127.0.0.1:$(etcd_client_port "$(idx "$1")")/health" 2>/dev/null | grep -q '"health":"true"'; }

etcd_start() {
  local m="$1" i; i="$(idx "$1")"
  need_bin etcd "apt-get install etcd-server"
  mrunning "$m" && return 0
  check_port_free "$m" "$(etcd_client_port "$i")"; check_port_free "$m" "$(etcd_peer_port "$i")"
  mkdir -p "$(mdir "$m")"
  log "starting $m on 127.0.0.1:$(etcd_client_port "$i")"
  # A restarted member rejoins with its data; "new" only matters for the very first start.
  spawn "$m" etcd --name "$m" --data-dir "$(mdir "$m")/data" \
    --listen-client-urls "http://127.0.0.1:$(etcd_client_port "$i")" \
    --advertise-client-urls "http://127.0.0.1:$(etcd_client_port "$i")" \
    --listen-peer-urls "http://127.0.0.1:$(etcd_peer_port "$i")" \
    --initial-advertise-peer-urls "http://127.0.0.1:$(etcd_peer_port "$i")" \
    --initial-cluster "$(etcd_cluster)" --initial-cluster-state new --initial-cluster-token chattrio-ha \
    --quota-backend-bytes 268435456 --logger zap --log-level warn
}

etcd_role() {
  local i; i="$(idx "$1")"
  local status
  status="$(curl -sf -m 2 -X POST -d '{}' "http://127.0.0.1:$(etcd_client_port "$i")/v3/maintenance/status" 2>/dev/null)" || { echo "not answering"; return 1; }
  local me leader
  me="$(sed -n 's/.*"member_id":"\([0-9]*\)".*/\1/p' <<<"$status")"
  leader="$(sed -n 's/.*"leader":"\([0-9]*\)".*/\1/p' <<<"$status")"
  if [[ -n "$me" && "$me" == "$leader" ]]; then echo leader; elif [[ -n "$leader" ]]; then echo follower; else echo "no leader"; return 1; fi
}

# ================================================================ PostgreSQL under Patroni
pg_data() { echo "$STACK_DIR/$1/data"; }

pg_write_config() {
  local m="$1" i; i="$(idx "$1")"
  local bin; bin="$(pg_bindir)" || die "PostgreSQL binaries not found; run scripts/install.sh"
  local hosts="" e
  for e in 1 2 3; do hosts+="${hosts:+,}127.0.0.1:$(etcd_client_port "$e")"; done
  cat > "$(mdir "$m")/patroni.yml" <<EOF
# generated by scripts/ha.sh -- do not edit
scope: chattrio-ha
name: $m
log:
  level: WARNING
restapi:
  listen: 127.0.0.1:$(patroni_port "$i")
  connect_address: 127.0.0.1:$(patroni_port "$i")
etcd3:
  hosts: $hosts
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 2
    retry_timeout: 4
    maximum_lag_on_failover: 1048576
    # Every commit waits for the standby; Patroni promotes only the synchronous standby, so a
    # failover loses no acknowledged commit. Not strict: with the standby down, the primary goes
    # on alone (and is then the only copy) rather than refusing every write.
    synchronous_mode: true
    synchronous_mode_strict: false
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        synchronous_commit: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        max_connections: 300
  initdb:
    - encoding: UTF8
    - no-locale
postgresql:
  listen: 127.0.0.1:$(pg_member_port "$i")
  connect_address: 127.0.0.1:$(pg_member_port "$i")
  data_dir: $(pg_data "$m")
  bin_dir: $bin
  pgpass: $(mdir "$m")/pgpass
  authentication:
    superuser: {username: chattrio, password: chattrio}
    replication: {username: replicator, password: replicator}
    rewind: {username: chattrio, password: chattrio}
  parameters:
    unix_socket_directories: '$(mdir "$m")'
    shared_buffers: 64MB
    log_min_messages: warning
    log_line_prefix: '%m [%p] '
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
EOF
}

pg_start() {
  local m="$1" i; i="$(idx "$1")"
  [[ -x "$PATRONI_BIN" ]] || die "Patroni $PATRONI_VERSION is not installed: run CHATTRIO_STACK=ha scripts/install.sh"
  mrunning "$m" && return 0
  check_port_free "$m" "$(patroni_port "$i")"; check_port_free "$m" "$(pg_member_port "$i")"
  is_root && { id -u "$PG_OS_USER" >/dev/null 2>&1 || die "system user '$PG_OS_USER' missing; run scripts/install.sh"; }
  mkdir -p "$(mdir "$m")"
  pg_write_config "$m"
  if is_root; then
    chown -R "$PG_OS_USER:" "$(mdir "$m")"
    ensure_traversable "$PG_OS_USER" "$(mdir "$m")"
    ensure_traversable "$PG_OS_USER" "$PATRONI_VENV"
  fi
  log "starting $m (Patroni REST 127.0.0.1:$(patroni_port "$i"), PostgreSQL 127.0.0.1:$(pg_member_port "$i"))"
  if is_root; then
    # PostgreSQL refuses to run as root; setpriv execs, so the pid file holds Patroni's pid.
    spawn "$m" setpriv --reuid="$PG_OS_USER" --regid="$PG_OS_USER" --clear-groups "$PATRONI_BIN" "$(mdir "$m")/patroni.yml"
  else
    spawn "$m" "$PATRONI_BIN" "$(mdir "$m")/patroni.yml"
  fi
}

patroni_json() { curl -s -m 2 "http://127.0.0.1:$(patroni_port "$(idx "$1")")/patroni" 2>/dev/null; }
pg_role() {  # primary | sync standby | standby, from Patroni's REST API
  local j role state
  j="$(patroni_json "$1")" || true
  [[ -n "$j" ]] || { echo "not answering"; return 1; }
  role="$(grep -o '"role": *"[a-z_]*"' <<<"$j" | head -n1 | sed 's/.*: *"\(.*\)"/\1/')"
  state="$(grep -o '"state": *"[a-z ]*"' <<<"$j" | head -n1 | sed 's/.*: *"\(.*\)"/\1/')"
  case "$role" in
    master|primary) role=primary ;;
    replica) role=standby; grep -q '"sync_standby": *true' <<<"$j" && role="sync standby" ;;
  esac
  [[ "$state" == running ]] || { echo "$role ($state)"; return 1; }
  echo "$role"
}
pg_is_primary() { [[ "$(pg_role "$1")" == primary ]]; }
pg_is_running() { local r; r="$(pg_role "$1")" && [[ "$r" == primary || "$r" == *standby ]]; }

pg_primary() {  # prints the member that is primary now
  local m
  for m in pg-1 pg-2; do mrunning "$m" && pg_is_primary "$m" && { echo "$m"; return 0; }; done
  return 1
}

pg_has_primary() { pg_primary >/dev/null; }
pg_has_sync_standby() {
  local m
  for m in pg-1 pg-2; do [[ "$(pg_role "$m")" == "sync standby" ]] && return 0; done
  return 1
}

pg_create_database() {
  local primary; primary="$(pg_primary)" || die "no PostgreSQL primary"
  local psql=("$(pg_bindir)/psql" -h 127.0.0.1 -p "$(pg_member_port "$(idx "$primary")")" -U chattrio -d postgres -v ON_ERROR_STOP=1 -qtA)
  if [[ "$("${psql[@]}" -c "select 1 from pg_database where datname='chattrio'")" != 1 ]]; then
    log "creating database chattrio on $primary"
    "${psql[@]}" -c "create database chattrio owner chattrio" >/dev/null
  fi
}

pg_kill() {  # Patroni and its postmaster: the machine is gone, not just the database
  local m="$1" ppid
  ppid="$( [[ -f "$(pg_data "$m")/postmaster.pid" ]] && read_pid "$(pg_data "$m")/postmaster.pid" || true)"
  kill -KILL "$(mpid "$m")" 2>/dev/null || true
  pid_matches "$ppid" "$(pg_data "$m")" && kill -KILL "$ppid" 2>/dev/null
  return 0
}

pg_stop() {
  local m="$1"
  mrunning "$m" || return 0
  log "stopping $m"
  stop_pid "$(mpid "$m")" 60 TERM || true   # Patroni stops its PostgreSQL first
}

# ================================================================ Redis and Sentinel
redis_ready_on() { [[ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" == PONG ]]; }
redis_member_ready() { redis_ready_on "$(redis_member_port "$(idx "$1")")"; }

redis_start_member() {
  local m="$1" i; i="$(idx "$1")"
  need_bin redis-server "apt-get install redis-server"
  mrunning "$m" && return 0
  check_port_free "$m" "$(redis_member_port "$i")"
  mkdir -p "$(mdir "$m")"
  # Written once: Sentinel rewrites it (replicaof) after a failover, and a restart must keep that.
  if [[ ! -f "$(mdir "$m")/redis.conf" ]]; then
    cat > "$(mdir "$m")/redis.conf" <<EOF
# generated by scripts/ha.sh; Sentinel rewrites the replication lines
bind 127.0.0.1
port $(redis_member_port "$i")
protected-mode no
dir $(mdir "$m")
save ""
appendonly no
maxclients 4000
tcp-keepalive 60
replica-read-only yes
EOF
    ((i == 1)) || echo "replicaof 127.0.0.1 $(redis_member_port 1)" >> "$(mdir "$m")/redis.conf"
  fi
  log "starting $m on 127.0.0.1:$(redis_member_port "$i")"
  spawn "$m" redis-server "$(mdir "$m")/redis.conf"
}

redis_role() {
  local info role
  info="$(redis-cli -h 127.0.0.1 -p "$(redis_member_port "$(idx "$1")")" info replication 2>/dev/null | tr -d '\r')" || true
  role="$(sed -n 's/^role://p' <<<"$info")"
  [[ -n "$role" ]] || { echo "not answering"; return 1; }
  [[ "$role" == master ]] && { echo "primary, $(sed -n 's/^connected_slaves://p' <<<"$info") replica(s)"; return 0; }
  echo "replica of $(sed -n 's/^master_host://p' <<<"$info"):$(sed -n 's/^master_port://p' <<<"$info") (link $(sed -n 's/^master_link_status://p' <<<"$info"))"
}

redis_replica_linked() { [[ "$(redis_role "$1")" == *"(link up)" ]]; }

sentinel_start() {
  local m="$1" i; i="$(idx "$1")"
  mrunning "$m" && return 0
  check_port_free "$m" "$(sentinel_port "$i")"
  mkdir -p "$(mdir "$m")"
  # Written once: Sentinel keeps its view of the topology (current primary, epochs) in it.
  if [[ ! -f "$(mdir "$m")/sentinel.conf" ]]; then
    cat > "$(mdir "$m")/sentinel.conf" <<EOF
# generated by scripts/ha.sh; Sentinel rewrites it
bind 127.0.0.1
port $(sentinel_port "$i")
protected-mode no
dir $(mdir "$m")
sentinel monitor $REDIS_SERVICE 127.0.0.1 $(redis_member_port 1) 2
sentinel down-after-milliseconds $REDIS_SERVICE 3000
sentinel failover-timeout $REDIS_SERVICE 10000
sentinel parallel-syncs $REDIS_SERVICE 1
EOF
  fi
  log "starting $m on 127.0.0.1:$(sentinel_port "$i")"
  spawn "$m" redis-server "$(mdir "$m")/sentinel.conf" --sentinel
}

sentinel_ready() { redis_ready_on "$(sentinel_port "$(idx "$1")")"; }
sentinel_role() {
  local p; p="$(sentinel_port "$(idx "$1")")"
  local addr
  addr="$(redis-cli -h 127.0.0.1 -p "$p" sentinel get-master-addr-by-name "$REDIS_SERVICE" 2>/dev/null | tr '\n' ':' | sed 's/:$//')" || true
  [[ -n "$addr" ]] || { echo "knows no primary"; return 1; }
  echo "sees primary $addr"
}

# ================================================================ Kafka (KRaft)
kafka_voters() {
  local i out=""
  for i in 1 2 3; do out+="${out:+,}$i@127.0.0.1:$(kafka_controller_port "$i")"; done
  echo "$out"
}

kafka_write_member_config() {
  local m="$1" i; i="$(idx "$1")"
  cat > "$(mdir "$m")/server.properties" <<EOF
# generated by scripts/ha.sh -- do not edit
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$(kafka_voters)
listeners=PLAINTEXT://127.0.0.1:$(kafka_member_port "$i"),CONTROLLER://127.0.0.1:$(kafka_controller_port "$i")
advertised.listeners=PLAINTEXT://127.0.0.1:$(kafka_member_port "$i")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$(mdir "$m")/data
num.network.threads=2
num.io.threads=4
num.partitions=8
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=6000
replica.lag.time.max.ms=5000
auto.create.topics.enable=false
delete.topic.enable=true
offsets.topic.replication.factor=3
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=8
group.initial.rebalance.delay.ms=0
log.retention.hours=24
log.segment.bytes=67108864
log.retention.check.interval.ms=60000
EOF
  cp "$SCRIPTS/ha/kafka-log4j.properties" "$(mdir "$m")/log4j.properties"
}

kafka_jvm() {  # kafka_jvm MEMBER: the java command line prefix
  local m="$1" cp
  [[ -s "$KAFKA_CLASSPATH_FILE" ]] || die "Kafka jars not resolved ($KAFKA_CLASSPATH_FILE missing); run scripts/install.sh"
  cp="$(cat "$KAFKA_CLASSPATH_FILE")"
  # shellcheck disable=SC2206  # HA_KAFKA_HEAP holds several flags
  KAFKA_JVM=(java $HA_KAFKA_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
             -XX:MaxMetaspaceSize=128m -Djava.awt.headless=true
             -Dlog4j.configuration="file:$(mdir "$m")/log4j.properties" -Dkafka.logs.dir="$(mdir "$m")" -cp "$cp")
}

kafka_cluster_id() {  # one id for all three, chosen at the first start
  local f="$STACK_DIR/kafka-cluster-id" cid=""
  [[ -s "$f" ]] && cid="$(cat "$f")"
  while [[ -z "$cid" || "$cid" == -* ]]; do
    cid="$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=' | cut -c1-22)"
  done
  echo "$cid" > "$f"
  echo "$cid"
}

kafka_start_member() {
  local m="$1" i; i="$(idx "$1")"
  need_bin java "apt-get install openjdk-17-jre-headless"
  mrunning "$m" && return 0
  check_port_free "$m" "$(kafka_member_port "$i")"; check_port_free "$m" "$(kafka_controller_port "$i")"
  mkdir -p "$(mdir "$m")/data"
  kafka_write_member_config "$m"
  kafka_jvm "$m"
  if [[ ! -s "$(mdir "$m")/data/meta.properties" ]]; then
    log "formatting $m storage"
    "${KAFKA_JVM[@]}" -Xmx256m kafka.tools.StorageTool format -t "$(kafka_cluster_id)" -c "$(mdir "$m")/server.properties" \
      --ignore-formatted >"$(mdir "$m")/format.log" 2>&1 || { cat "$(mdir "$m")/format.log" >&2; die "$m storage format failed"; }
  fi
  log "starting $m on 127.0.0.1:$(kafka_member_port "$i") (controller $(kafka_controller_port "$i"))"
  spawn "$m" "${KAFKA_JVM[@]}" kafka.Kafka "$(mdir "$m")/server.properties"
}

kafka_member_ready() {
  grep -qE 'Kafka Server started|started \(kafka.server.KafkaRaftServer\)' "$(mlog "$1")" 2>/dev/null \
    && port_open "$(kafka_member_port "$(idx "$1")")"
}

kafka_role() {  # the quorum's leader as this member's metadata log records it, and what it leads
  local m="$1" i; i="$(idx "$1")"
  kafka_member_ready "$m" || { echo "starting"; return 1; }
  local qs="$(mdir "$m")/data/__cluster_metadata-0/quorum-state" leader=""
  [[ -f "$qs" ]] && leader="$(sed -n 's/.*"leaderId":\(-\{0,1\}[0-9]*\).*/\1/p' "$qs")"
  local role="broker+controller"
  [[ "$leader" == "$i" ]] && role+=", quorum leader" || role+=", voter"
  echo "$role${KAFKA_LEADS[$i]:+, leads ${KAFKA_LEADS[$i]} partition(s)}"
}

# Partition leaders per broker, from one Metadata request (needs the venv's confluent-kafka).
declare -A KAFKA_LEADS=()
kafka_load_leads() {
  [[ -x "$PYTHON" ]] || return 0
  while read -r broker count; do KAFKA_LEADS[$broker]="$count"; done < <(
    "$PYTHON" "$SCRIPTS/ha/kafka_leaders.py" "$(kafka_bootstrap)" 2>/dev/null || true)
}

# ================================================================ Prometheus
# compose/prometheus's config and alert rules; the nodes come from the file_sd targets file
# scripts/cluster.sh writes when it starts nodes on this stack (none until then).
PROMETHEUS_TARGETS="$STACK_DIR/nodes/scrape-targets.json"

prometheus_start() {
  local m=prometheus
  need_bin prometheus "apt-get install prometheus"
  mrunning "$m" && return 0
  check_port_free "$m" "$(prometheus_port)"
  mkdir -p "$(mdir "$m")"
  local python="$PYTHON"
  [[ -x "$python" ]] || python=python3  # a checkout without its own .venv
  "$python" "$SCRIPTS/ha/prometheus_config.py" "$(mconf "$m")" "$PROMETHEUS_TARGETS" \
    || die "could not write $(mconf "$m") (needs PyYAML, in the virtualenv; run scripts/install.sh)"
  log "starting $m on 127.0.0.1:$(prometheus_port)"
  spawn "$m" prometheus --config.file="$(mconf "$m")" --storage.tsdb.path="$(mdir "$m")/data" \
    --storage.tsdb.retention.time=2d --web.listen-address="127.0.0.1:$(prometheus_port)"
}

prometheus_ready() { curl -sf -m 2 "http://127.0.0.1:$(prometheus_port)/-/ready" >/dev/null 2>&1; }
prometheus_role() {
  local targets total up
  targets="$(curl -sf -m 2 "http://127.0.0.1:$(prometheus_port)/api/v1/targets?state=active" 2>/dev/null)" \
    || { echo "not answering"; return 1; }
  total="$({ grep -o '"health":"[a-z]*"' <<<"$targets" || true; } | wc -l)"
  up="$({ grep -o '"health":"up"' <<<"$targets" || true; } | wc -l)"
  echo "scrapes $total node(s), $up up"
}

# ================================================================ members
MEMBERS=(etcd-1 etcd-2 etcd-3 pg-1 pg-2 redis-1 redis-2 sentinel-1 sentinel-2 sentinel-3 kafka-1 kafka-2 kafka-3 prometheus)

member_start() {
  case "$1" in
    etcd-*) etcd_start "$1" ;;
    pg-*) pg_start "$1" ;;
    redis-*) redis_start_member "$1" ;;
    sentinel-*) sentinel_start "$1" ;;
    kafka-*) kafka_start_member "$1" ;;
    prometheus) prometheus_start ;;
  esac
}

member_wait() {
  case "$1" in
    etcd-*) wait_for "$1" "etcd health" etcd_ready "$1" ;;
    pg-*) wait_for "$1" "PostgreSQL running as primary or standby" pg_is_running "$1" ;;
    redis-*) wait_for "$1" "PING" redis_member_ready "$1" ;;
    sentinel-*) wait_for "$1" "PING" sentinel_ready "$1" ;;
    kafka-*) wait_for "$1" "'Kafka Server started'" kafka_member_ready "$1" ;;
    prometheus) wait_for "$1" "/-/ready" prometheus_ready ;;
  esac
}

member_role() {
  case "$1" in
    etcd-*) etcd_role "$1" ;;
    pg-*) pg_role "$1" ;;
    redis-*) redis_role "$1" ;;
    sentinel-*) sentinel_role "$1" ;;
    kafka-*) kafka_role "$1" ;;
    prometheus) prometheus_role ;;
  esac
}

member_port() {
  case "$1" in
    etcd-*) etcd_client_port "$(idx "$1")" ;;
    pg-*) echo "$(pg_member_port "$(idx "$1")") rest $(patroni_port "$(idx "$1")")" ;;
    redis-*) redis_member_port "$(idx "$1")" ;;
    sentinel-*) sentinel_port "$(idx "$1")" ;;
    kafka-*) kafka_member_port "$(idx "$1")" ;;
    prometheus) prometheus_port ;;
  esac
}

member_stop() {
  local m="$1"
  case "$m" in pg-*) pg_stop "$m"; return ;; esac
  mrunning "$m" || { rm -f "$(mpidfile "$m")"; return 0; }
  log "stopping $m"
  stop_pid "$(mpid "$m")" 30 TERM || true
  rm -f "$(mpidfile "$m")"
}

member_kill() {
  local m="$1"
  mrunning "$m" || { warn "$m is not running"; return 0; }
  log "SIGKILL $m (pid $(mpid "$m"))"
  case "$m" in pg-*) pg_kill "$m" ;; *) kill -KILL "$(mpid "$m")" 2>/dev/null || true ;; esac
  local n
  for ((n = 0; n < 50; n++)); do mrunning "$m" || return 0; sleep 0.1; done
}

member_pids() {  # every process of a member: a hung member is all of them stopped
  local m="$1" ppid
  mrunning "$m" || return 0
  mpid "$m"
  case "$m" in
    pg-*)
      ppid="$( [[ -f "$(pg_data "$m")/postmaster.pid" ]] && read_pid "$(pg_data "$m")/postmaster.pid" || true)"
      if pid_matches "$ppid" "$(pg_data "$m")"; then echo "$ppid"; pgrep -P "$ppid" || true; fi ;;
  esac
}

member_signal() {
  local m="$1" sig="$2" pids
  mapfile -t pids < <(member_pids "$m")
  ((${#pids[@]})) || die "$m is not running"
  log "SIG$sig $m (pids ${pids[*]})"
  kill "-$sig" "${pids[@]}" 2>/dev/null || true
}

check_member() {
  local m
  for m in "${MEMBERS[@]}"; do [[ "$m" == "$1" ]] && return 0; done
  die "unknown member '$1' (one of: ${MEMBERS[*]})"
}

status_member() {
  local m="$1" role rc=0
  if mrunning "$m"; then
    role="$(member_role "$m")" || rc=1
    printf '%-11s up    pid %-8s 127.0.0.1:%-15s %s\n' "$m" "$(mpid "$m")" "$(member_port "$m")" "$role"
  else
    printf '%-11s down                127.0.0.1:%-15s\n' "$m" "$(member_port "$m")"
    rc=1
  fi
  return "$rc"
}

# Start order: etcd before Patroni; the Redis primary before its replica and the Sentinels; the
# three Kafka nodes together (a controller quorum needs two of them to elect a leader); Prometheus
# last.
ha_up() {
  local m
  mkdir -p "$STACK_DIR"
  for m in etcd-1 etcd-2 etcd-3; do member_start "$m"; done
  for m in etcd-1 etcd-2 etcd-3; do member_wait "$m"; done
  for m in kafka-1 kafka-2 kafka-3; do member_start "$m"; done
  for m in pg-1 pg-2; do member_start "$m"; done
  for m in redis-1 redis-2; do member_start "$m"; member_wait "$m"; done
  for m in sentinel-1 sentinel-2 sentinel-3; do member_start "$m"; member_wait "$m"; done
  [[ "$(redis_role redis-1)" == primary* ]] && wait_for redis-2 "replication from redis-1" redis_replica_linked redis-2
  for m in pg-1 pg-2 kafka-1 kafka-2 kafka-3; do member_wait "$m"; done
  wait_for pg-1 "a PostgreSQL primary" pg_has_primary
  # Until Patroni names the synchronous standby, commits are not replicated before they return.
  wait_for pg-1 "a synchronous standby" pg_has_sync_standby
  pg_create_database
  member_start prometheus; member_wait prometheus
  log "up: $(scripts_env_summary)"
}

# Stop order: Prometheus, Kafka, the Sentinels and Redis, then Patroni while etcd still holds its lock, etcd
# last. The members of a group stop together: a Kafka node stopped after the other two waits out
# its timeout for a controller quorum that is gone.
ha_down() {
  local group m
  for group in prometheus "kafka-3 kafka-2 kafka-1" "sentinel-3 sentinel-2 sentinel-1" "redis-2 redis-1" "pg-2 pg-1" \
               "etcd-3 etcd-2 etcd-1"; do
    for m in $group; do member_stop "$m" & done
    wait
  done
}

scripts_env_summary() { echo "PostgreSQL $(pg_dsn_hosts), Redis via Sentinels $(sentinel_hosts), Kafka $(kafka_bootstrap)"; }

cmd="${1:-status}"; shift || true
case "$cmd" in
  up|down|start|stop|restart|kill|wipe)
    mkdir -p "$STACK_DIR"
    exec 9>"$STACK_DIR/.stack.lock"
    flock -w 300 9 || die "timed out waiting for another ha.sh" ;;
esac
case "$cmd" in
  up|start|restart) reserve_service_ports $(ha_all_ports) ;;
esac

case "$cmd" in
  up) ha_up ;;
  down) ha_down ;;
  start)
    [[ $# -eq 1 ]] || die "usage: ha.sh start MEMBER"
    check_member "$1"; member_start "$1"; member_wait "$1" ;;
  stop)
    [[ $# -eq 1 ]] || die "usage: ha.sh stop MEMBER"
    check_member "$1"; member_stop "$1" ;;
  restart)
    [[ $# -eq 1 ]] || die "usage: ha.sh restart MEMBER"
    check_member "$1"; member_stop "$1"; member_start "$1"; member_wait "$1" ;;
  signal)
    [[ $# -eq 2 && "$2" =~ ^[A-Z]+$ ]] || die "usage: ha.sh signal MEMBER SIG (e.g. STOP, CONT)"
    check_member "$1"; member_signal "$1" "$2" ;;
  kill)
    [[ $# -eq 1 ]] || die "usage: ha.sh kill MEMBER"
    check_member "$1"; member_kill "$1" ;;
  status)
    rc=0
    echo "stack 'ha' ($STACK_DIR)"
    kafka_load_leads
    for m in "${MEMBERS[@]}"; do status_member "$m" || rc=1; done
    exit "$rc" ;;
  running)
    for m in "${MEMBERS[@]}"; do mrunning "$m" || exit 1; done ;;
  role)
    [[ $# -eq 1 ]] || die "usage: ha.sh role MEMBER"
    check_member "$1"; member_role "$1" ;;
  primary)  # the member that is primary now: pg or redis
    case "${1:-}" in
      pg) pg_primary ;;
      redis) for m in redis-1 redis-2; do [[ "$(redis_role "$m")" == primary* ]] && { echo "$m"; exit 0; }; done; exit 1 ;;
      *) die "usage: ha.sh primary pg|redis" ;;
    esac ;;
  members) printf '%s\n' "${MEMBERS[@]}" ;;
  env) ha_print_env ;;
  logs) for m in "${MEMBERS[@]}"; do mlog "$m"; done ;;
  wipe)
    ha_down
    log "deleting $STACK_DIR"
    rm -rf "$STACK_DIR" ;;
  *)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2 ;;
esac
