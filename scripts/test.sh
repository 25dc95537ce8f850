#!/usr/bin/env bash
# `make test`: install what is missing, start the separate *test* stack
# (.stack/test, its own ports, so it can run next to `make run`), run pytest
# (PYTEST_ARGS passed through) and the web tests, then stop what it started.
# Exit code: non-zero if any part failed; pytest "no tests collected" (5) is OK.
# WEB_TESTS=0 skips the web tests (`make test-py`); CHAOS_TESTS=0 skips the tests on the ha topology.
set -euo pipefail
export CHATTRIO_STACK="${CHATTRIO_TEST_STACK:-test}"
source "$(dirname "$0")/lib.sh"

t0=$SECONDS
phase() { log "$* (t+$((SECONDS - t0))s)"; }

"$SCRIPTS/install.sh"

cleaned=0
cleanup() {
  local rc=$?
  ((cleaned)) && return; cleaned=1
  trap '' INT TERM
  # last session out: also stop nodes a test may have left behind on the test stack
  session_end "$SCRIPTS/cluster.sh" down
  phase "done, exit $rc"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

phase "starting test stack"
session_begin   # stack.sh up; remembers what it started
eval "$(print_env)"

# In CI bound each part so a hang can't eat the whole job.
limit() {
  if [[ -n "${CI:-}" ]]; then timeout -k 30 "$1" "${@:2}"; else "${@:2}"; fi
}

failed=()
phase "Autobahn TestSuite set-up for tests/transport/test_autobahn.py (scripts/autobahn.sh; cached in .cache/py27)"
limit 1800 "$SCRIPTS/autobahn.sh" install || failed+=("autobahn set-up (exit $?)")

phase "ruff: lint and format of chattrio/ and tests/"
(cd "$REPO" && "$REPO/.venv/bin/ruff" check chattrio tests && "$REPO/.venv/bin/ruff" format --check chattrio tests) \
  || failed+=("ruff")
phase "mypy: types of chattrio/ (strict but for the bot) and tests/ (pyproject.toml)"
(cd "$REPO" && "$REPO/.venv/bin/mypy") || failed+=("mypy")

pytest_args=()
[[ -n "${PYTEST_ARGS:-}" ]] && eval "pytest_args=($PYTEST_ARGS)"
phase "pytest ${pytest_args[*]}"
set +e
(cd "$REPO" && limit "${CHATTRIO_PYTEST_TIMEOUT:-2700}" "$REPO/.venv/bin/pytest" "${pytest_args[@]}")
rc=$?
set -e
case "$rc" in
  0) ;;
  5) log "pytest collected no tests (exit 5), treated as success" ;;
  *) failed+=("pytest (exit $rc)") ;;
esac

# The tests on the ha topology (tests/ha, docs/ha.md): the chaos cases (a fault under load per
# case, each with the zero-loss verdict, docs/reliability.md), then the topology's own checks and
# failovers. The ha stack (and Patroni and etcd, installed here when missing) is started for them
# and stopped after, unless it was running.
if [[ "${CHAOS_TESTS:-1}" == 0 ]]; then
  log "CHAOS_TESTS=0: tests on the ha topology not run"
else
  phase "tests on the ha topology (chaos cases first)"
  set +e
  CHATTRIO_STACK=ha "$SCRIPTS/install.sh" --no-web-deps \
    && (cd "$REPO" && CHATTRIO_HA_TESTS=1 limit "${CHATTRIO_CHAOS_TEST_TIMEOUT:-1800}" "$REPO/.venv/bin/pytest" tests/ha)
  rc=$?
  set -e
  ((rc == 0)) || failed+=("ha topology tests (exit $rc)")
fi

if [[ "${WEB_TESTS:-1}" == 0 ]]; then
  log "WEB_TESTS=0: skipping web tests"
elif [[ -f "$REPO/web/package.json" ]]; then
  phase "web lint and types (ESLint, tsc --noEmit)"
  limit "${CHATTRIO_WEB_TEST_TIMEOUT:-1200}" "$SCRIPTS/web.sh" lint || failed+=("web lint (exit $?)")
  phase "web tests"
  limit "${CHATTRIO_WEB_TEST_TIMEOUT:-1200}" "$SCRIPTS/web.sh" test || failed+=("web tests (exit $?)")
fi

if ((${#failed[@]})); then
  log "FAILED: ${failed[*]}"
  exit 1
fi
log "all tests passed"
