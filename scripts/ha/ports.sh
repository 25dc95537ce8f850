# shellcheck shell=bash
# Ports and node settings of the ha stack (scripts/ha.sh). Source it after lib.sh.
# All ports lie in 574xx, clear of the dev (55432/56379/59092-59093) and test
# (55442/56389/59102-59103) stacks; CHATTRIO_HA_PORT_BASE moves the whole block.
HA_BASE="${CHATTRIO_HA_PORT_BASE:-57400}"
REDIS_SERVICE=chattrio

etcd_client_port()      { echo $((HA_BASE + $1)); }       # 57401-57403
etcd_peer_port()        { echo $((HA_BASE + 10 + $1)); }  # 57411-57413
patroni_port()          { echo $((HA_BASE + 20 + $1)); }  # 57421-57422
pg_member_port()        { echo $((HA_BASE + 30 + $1)); }  # 57431-57432
redis_member_port()     { echo $((HA_BASE + 60 + $1)); }  # 57461-57462
sentinel_port()         { echo $((HA_BASE + 70 + $1)); }  # 57471-57473
kafka_member_port()     { echo $((HA_BASE + 90 + $1)); }  # 57491-57493
kafka_controller_port() { echo $((HA_BASE + 95 + $1)); }  # 57496-57498
prometheus_port()       { echo $((HA_BASE + 80)); }       # 57480

ha_all_ports() {
  local i
  for i in 1 2 3; do
    etcd_client_port "$i"; etcd_peer_port "$i"; sentinel_port "$i"; kafka_member_port "$i"; kafka_controller_port "$i"
  done
  for i in 1 2; do patroni_port "$i"; pg_member_port "$i"; redis_member_port "$i"; done
  prometheus_port
}

_join() { local IFS=,; echo "$*"; }
kafka_bootstrap() { _join "127.0.0.1:$(kafka_member_port 1)" "127.0.0.1:$(kafka_member_port 2)" "127.0.0.1:$(kafka_member_port 3)"; }
pg_dsn_hosts() { _join "127.0.0.1:$(pg_member_port 1)" "127.0.0.1:$(pg_member_port 2)"; }
sentinel_hosts() { _join "127.0.0.1:$(sentinel_port 1)" "127.0.0.1:$(sentinel_port 2)" "127.0.0.1:$(sentinel_port 3)"; }

ha_print_env() {
  cat <<EOF
export CHATTRIO_PG_DSN='postgresql://chattrio:chattrio@$(pg_dsn_hosts)/chattrio?target_session_attrs=read-write'
export CHATTRIO_REDIS_URL=redis+sentinel://$(sentinel_hosts)/$REDIS_SERVICE/0
export CHATTRIO_KAFKA_BOOTSTRAP=$(kafka_bootstrap)
export CHATTRIO_TOPIC_REPLICATION=3
export CHATTRIO_STACK=ha
export CHATTRIO_REPO=$REPO
export CHATTRIO_STACK_DIR=$STACK_DIR
EOF
}
