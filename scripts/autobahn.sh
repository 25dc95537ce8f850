#!/usr/bin/env bash
# The Autobahn TestSuite's `wstest` (WebSocket conformance, tests/transport/test_autobahn.py). It runs only on
# CPython 2.7, which Debian bookworm no longer ships: this script takes Debian bullseye's 2.7 .debs
# (checked against pinned SHA-256 sums from bullseye's Packages index), unpacks them into the
# git-ignored .cache/py27/ (never into the system) and pip-installs scripts/autobahn-requirements.txt
# there. Idempotent: once installed (a stamp per requirements file) it downloads nothing.
#
# Usage: scripts/autobahn.sh install         set up .cache/py27/ if needed
#        scripts/autobahn.sh wstest ARGS...  set up if needed, then run wstest ARGS
# CHATTRIO_DEBIAN_MIRROR (default http://deb.debian.org/debian) is where the .debs come from; once
# bullseye leaves the mirrors, http://archive.debian.org/debian has them.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

CACHE="$REPO/.cache/py27"
ROOT="$CACHE/root"  # the unpacked .debs: $ROOT/usr/bin/python2.7
DEBS="$CACHE/debs"
REQUIREMENTS="$SCRIPTS/autobahn-requirements.txt"
STAMP="$CACHE/.installed"
MIRROR="${CHATTRIO_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PIP_WHEEL_URL="https://files.pythonhosted.org/packages/27/79/8a850fe3496446ff0d584327ae44e7500daf6764ca1a382d2d02789accf7/pip-20.3.4-py2.py3-none-any.whl"
PIP_WHEEL_SHA256=217ae5161a0e08c0fb873858806e3478c9775caffce5168b50ec885e358c199d

# pool path and SHA-256 of each .deb, from bullseye's main/binary-amd64/Packages index.
# libssl1.1 and libffi7 are the libraries python2.7's _ssl, _hashlib and _ctypes need that
# bookworm no longer has; the -dev packages carry the headers wsaccel and ujson compile against.
DEB_PACKAGES=(
  "p/python2.7/python2.7-minimal_2.7.18-8+deb11u1_amd64.deb 44f0cdc1a343303d31c55fcb3a6402cfe326adf749ec30e375e6e0c0c5f7c1f7"
  "p/python2.7/libpython2.7-minimal_2.7.18-8+deb11u1_amd64.deb 85833c92314011b89bbead6f9a5a7a360b5ee4f9b95e001225afead4ebf9f7d3"
  "p/python2.7/libpython2.7-stdlib_2.7.18-8+deb11u1_amd64.deb 3e627d6d8992b853e000b8a4c09dda613fb767cdb711a2eac20ebc9f867b593c"
  "p/python2.7/libpython2.7_2.7.18-8+deb11u1_amd64.deb 13621011f1b24bcda7c315bb2848cb447e21410870872fadd8e8c65b0dc572ef"
  "p/python2.7/libpython2.7-dev_2.7.18-8+deb11u1_amd64.deb 887034beb360069df8b519ad93893454ef3402415775a0466940fb73d6a8b8ca"
  "o/openssl/libssl1.1_1.1.1w-0+deb11u1_amd64.deb aadf8b4b197335645b230c2839b4517aa444fd2e8f434e5438c48a18857988f7"
  "libf/libffi/libffi7_3.3-6_amd64.deb 30ca89bfddae5fa6e0a2a044f22b6e50cd17c4bc6bc850c579819aeab7101f0f"
)

# download_verified URL SHA256 FILE: fetch URL into FILE unless FILE already has that sum
download_verified() {
  local url="$1" sum="$2" file="$3"
  if [[ -f "$file" ]] && echo "$sum  $file" | sha256sum --check --status; then return; fi
  curl -fsSL --retry 3 --connect-timeout 20 --max-time 300 -o "$file.part" "$url" \
    || die "download failed: $url"
  echo "$sum  $file.part" | sha256sum --check --status \
    || { rm -f "$file.part"; die "SHA-256 mismatch: $url"; }
  mv "$file.part" "$file"
}

py27() {  # run the unpacked interpreter with its own prefix and libraries
  LD_LIBRARY_PATH="$ROOT/usr/lib/x86_64-linux-gnu" PYTHONHOME="$ROOT/usr" PYTHONNOUSERSITE=1 \
    PIP_FIND_LINKS='' PIP_DISABLE_PIP_VERSION_CHECK=1 "$ROOT/usr/bin/python2.7" "$@"
}

unpack_python() {
  local entry path sum
  mkdir -p "$DEBS"
  rm -rf "$ROOT"
  for entry in "${DEB_PACKAGES[@]}"; do
    read -r path sum <<<"$entry"
    download_verified "$MIRROR/pool/main/$path" "$sum" "$DEBS/${path##*/}"
    dpkg-deb -x "$DEBS/${path##*/}" "$ROOT"
  done
  py27 -c 'import ssl, ctypes, hashlib' || die "the unpacked python2.7 cannot import ssl/ctypes/hashlib"
}

# Packages go to pip's default scheme under PYTHONHOME, $ROOT/usr/local/lib/python2.7/dist-packages:
# a site directory, so zope's namespace .pth files work.
pip_install() {
  local wheel="$DEBS/${PIP_WHEEL_URL##*/}" log="$CACHE/pip-install.log"
  download_verified "$PIP_WHEEL_URL" "$PIP_WHEEL_SHA256" "$wheel"
  {
    py27 "$wheel/pip" install --no-cache-dir pip==20.3.4 setuptools==44.0.0 wheel==0.37.1 &&
      CFLAGS="-I$ROOT/usr/include/python2.7 -I$ROOT/usr/include" \
        py27 -m pip install --no-cache-dir -r "$REQUIREMENTS"
  } >"$log" 2>&1 || { tail -n 30 "$log" >&2; die "pip install for python2.7 failed (log: $log)"; }
}

install() {
  local want
  want="$(cat "$REQUIREMENTS" "$SCRIPTS/autobahn.sh" | sha256sum | cut -c1-16)"  # contents, not paths
  [[ "$(cat "$STAMP" 2>/dev/null || true)" == "$want" ]] && return
  need_bin curl; need_bin dpkg-deb; need_bin gcc
  log "setting up CPython 2.7 and the Autobahn TestSuite in $CACHE"
  rm -f "$STAMP"
  unpack_python
  pip_install
  py27 -c 'import autobahntestsuite.wstest' || die "autobahntestsuite does not import"
  echo "$want" >"$STAMP"
}

mkdir -p "$CACHE"
exec 8>"$CACHE/.lock"
flock 8  # two test runs at once set it up once
case "${1:-}" in
  install) install ;;
  wstest)
    install
    flock -u 8
    shift
    py27 -c 'import sys; from autobahntestsuite.wstest import run; sys.argv[0] = "wstest"; run()' "$@"
    ;;
  *) die "usage: $0 install | wstest ARGS..." ;;
esac
