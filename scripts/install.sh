#!/usr/bin/env bash
# Idempotent installer for everything the local stack needs:
#   - apt packages (PostgreSQL, Redis, nginx, Java, Maven; Node/Chromium when web/ exists)
#   - the 'chattrio' system user PostgreSQL runs as (postgres refuses to run as root)
#   - .venv with `pip install -e '.[dev]'` (re-run only when pyproject.toml changes)
#   - Apache Kafka jars resolved by Maven from kafka/pom.xml (classpath cached)
# Fast no-op when everything is already there.
#
# Usage: scripts/install.sh [--no-web-deps]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

WEB_DEPS=1
[[ "${1:-}" == "--no-web-deps" ]] && WEB_DEPS=0

mkdir -p "$STACK_ROOT"
# Serialise concurrent installs (make run and make test in parallel).
exec 9>"$STACK_ROOT/.install.lock"
flock 9

# ---------------------------------------------------------------- apt
missing=()
pg_bindir >/dev/null 2>&1       || missing+=(postgresql)
command -v pg_isready >/dev/null 2>&1 || missing+=(postgresql-client)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1    || missing+=(redis-tools)
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
command -v java >/dev/null 2>&1  || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1   || missing+=(maven)
command -v runuser >/dev/null 2>&1 || missing+=(util-linux)
command -v ss >/dev/null 2>&1    || missing+=(iproute2)
command -v curl >/dev/null 2>&1  || missing+=(curl)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)  # promtool checks compose/'s monitoring config
# tests/transport/test_autobahn.py: scripts/autobahn.sh compiles wsaccel and ujson for its Python 2.7
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
[[ -f /usr/include/stdio.h ]] || missing+=(libc6-dev)
# The ha topology's own tools, only when it is asked for (CHATTRIO_STACK=ha or TOPOLOGY=ha):
# Debian's etcd-server starts an etcd service of its own where systemd runs, which the
# single-instance stack has no use for.
if [[ "$STACK" == ha ]]; then
  command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
  /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)  # Patroni's virtualenv
fi
if [[ -f "$REPO/web/package.json" && "$WEB_DEPS" == 1 ]]; then
  command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  # the web client's Korean text in headless Chromium (screenshots) needs a CJK font
  [[ -d /usr/share/fonts/opentype/noto ]] || missing+=(fonts-noto-cjk)
  [[ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ]] || missing+=(fonts-noto-color-emoji)  # emoji, not boxes
fi

if ((${#missing[@]})); then
  is_root || command -v sudo >/dev/null 2>&1 || die "missing packages: ${missing[*]} (need root or sudo to apt-get install them)"
  SUDO=(); is_root || SUDO=(sudo)
  log "installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  APT=("${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
  "${APT[@]}" update -qq
  "${APT[@]}" install -y -qq --no-install-recommends "${missing[@]}" >"$STACK_ROOT/apt.log" 2>&1 \
    || { tail -n 30 "$STACK_ROOT/apt.log" >&2; die "apt-get install ${missing[*]} failed (log: $STACK_ROOT/apt.log)"; }
fi

pg_bindir >/dev/null || die "PostgreSQL binaries (initdb) not found even after install"
python_ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; }

# ---------------------------------------------------------------- system user for postgres
if is_root && ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
  log "creating system user '$PG_OS_USER' (PostgreSQL refuses to run as root)"
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$PG_OS_USER"
fi

# ---------------------------------------------------------------- python venv
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  for c in python3.11 python3 python3.12 python3.13; do
    if command -v "$c" >/dev/null 2>&1 && python_ok "$c"; then PY="$c"; break; fi
  done
fi
[[ -n "$PY" ]] || die "no Python >= 3.11 found (set PYTHON=/path/to/python3.11)"

VENV="$REPO/.venv"
if [[ ! -x "$VENV/bin/python" ]] || ! python_ok "$VENV/bin/python"; then
  log "creating virtualenv .venv with $($PY --version 2>&1)"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.chattrio-install-stamp"
want="$(file_hash "$REPO/pyproject.toml")"
if [[ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]]; then
  log "pip install -e '.[dev]'"
  piplog="$STACK_ROOT/pip-install.log"
  { "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
    (cd "$REPO" && "$VENV/bin/python" -m pip install --disable-pip-version-check -e '.[dev]'); } >"$piplog" 2>&1 \
    || { tail -n 40 "$piplog" >&2; die "pip install failed (full log: $piplog)"; }
  echo "$want" > "$STAMP"
fi

# ---------------------------------------------------------------- Patroni (ha topology only)
# Pinned from PyPI rather than Debian's 3.0.2, which never repairs a /sync key naming another
# leader: after the primary hung (SIGSTOP) past the lock's ttl, the standby that took the lock
# for a moment left one behind, and the primary never named a synchronous standby again. The
# system Python, because PostgreSQL's user runs Patroni and cannot reach a Python under /root.
if [[ "$STACK" == ha && "$("$PATRONI_BIN" --version 2>/dev/null || true)" != "patroni $PATRONI_VERSION" ]]; then
  log "installing Patroni $PATRONI_VERSION into ${PATRONI_VENV#"$REPO"/}"
  rm -rf "$PATRONI_VENV"
  { /usr/bin/python3 -m venv "$PATRONI_VENV" &&
    "$PATRONI_VENV/bin/python" -m pip install --disable-pip-version-check \
      "patroni[etcd3,psycopg3]==$PATRONI_VERSION"; } >"$STACK_ROOT/patroni-install.log" 2>&1 \
    || { tail -n 30 "$STACK_ROOT/patroni-install.log" >&2; die "installing Patroni failed (log: $STACK_ROOT/patroni-install.log)"; }
fi

# ---------------------------------------------------------------- kafka jars
KSTAMP="$KAFKA_CLASSPATH_FILE.stamp"
kwant="$(file_hash "$REPO/kafka/pom.xml")"
cp_ok() {
  [[ -s "$KAFKA_CLASSPATH_FILE" ]] || return 1
  local j
  while IFS= read -r j; do [[ -f "$j" ]] || return 1; done < <(tr ':' '\n' < "$KAFKA_CLASSPATH_FILE")
}
if [[ "$(cat "$KSTAMP" 2>/dev/null || true)" != "$kwant" ]] || ! cp_ok; then
  log "resolving Apache Kafka jars with Maven (kafka/pom.xml)"
  mvn -q -B -Dstyle.color=never -f "$REPO/kafka/pom.xml" dependency:build-classpath \
    -Dmdep.outputFile="$KAFKA_CLASSPATH_FILE" </dev/null >"$STACK_ROOT/mvn.log" 2>&1 \
    || { tail -n 40 "$STACK_ROOT/mvn.log" >&2; die "maven could not resolve kafka/pom.xml (log: $STACK_ROOT/mvn.log)"; }
  cp_ok || die "kafka classpath $KAFKA_CLASSPATH_FILE is empty or broken"
  echo "$kwant" > "$KSTAMP"
fi

exit 0
