#!/usr/bin/env bash
# Web client helpers (no-op when web/package.json does not exist).
# Usage: scripts/web.sh deps    npm ci, only if node_modules is missing or the lock file changed
#        scripts/web.sh build   deps + npm run build (-> web/dist, served by the nodes)
#        scripts/web.sh test    deps + npm run test:unit / test:e2e (--if-present)
#        scripts/web.sh lint    deps + npm run typecheck (tsc --noEmit) and npm run lint (ESLint)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

WEB="$REPO/web"
[[ -f "$WEB/package.json" ]] || { log "no web/package.json, skipping web $*"; exit 0; }
need_bin npm "apt-get install nodejs npm"
cd "$WEB"

deps() {
  local stamp="$WEB/node_modules/.chattrio-deps-stamp" want
  want="$(file_hash package.json package-lock.json)"
  if [[ -d node_modules && "$(cat "$stamp" 2>/dev/null || true)" == "$want" ]]; then return 0; fi
  if [[ -f package-lock.json ]]; then
    log "npm ci"
    npm ci --no-audit --no-fund --loglevel=error
  else
    warn "web/package-lock.json missing, using npm install"
    npm install --no-audit --no-fund --loglevel=error
  fi
  echo "$want" > "$stamp"
}

# Browser for e2e tests (playwright-core etc.): the system chromium.
if [[ -z "${CHROME_BIN:-}" ]] && command -v chromium >/dev/null 2>&1; then
  export CHROME_BIN; CHROME_BIN="$(command -v chromium)"
fi

case "${1:-}" in
  deps) deps ;;
  build)
    deps
    log "npm run build"
    npm run build --silent ;;
  test)
    deps
    rc=0
    log "npm run test:unit"
    npm run test:unit --if-present || { rc=$?; warn "web unit tests failed (exit $rc)"; }
    log "npm run test:e2e"
    npm run test:e2e --if-present || { r=$?; warn "web e2e tests failed (exit $r)"; rc=$r; }
    exit "$rc" ;;
  lint)
    deps
    rc=0
    log "npm run typecheck"
    npm run typecheck --silent || { rc=$?; warn "web type check failed (exit $rc)"; }
    log "npm run lint"
    npm run lint --silent || { r=$?; warn "web lint failed (exit $r)"; rc=$r; }
    exit "$rc" ;;
  *) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
