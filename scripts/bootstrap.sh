#!/usr/bin/env bash
# Set up everything unidist needs on a fresh Debian/Ubuntu machine that has only Python 3.10+:
# a virtual environment in .venv with unidist installed in editable mode, and (with --dev)
# the test tools, a redis-server binary for the Redis tests and sshd for the remote-command tests.
#   scripts/bootstrap.sh          # runtime only (the demo)
#   scripts/bootstrap.sh --dev    # + test tools + redis-server
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1
PY=${PYTHON:-python3}
VENV=${UNIDIST_VENV:-.venv}

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "unidist needs Python 3.10 or newer as '$PY' (set PYTHON=/path/to/python3)." >&2
  exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PY" -m venv "$VENV" 2>/dev/null; then
    echo "Could not create a virtual environment: install the venv module" >&2
    echo "(Debian/Ubuntu: apt-get install -y python3-venv) and run this again." >&2
    exit 1
  fi
fi

stamp="$VENV/.unidist-installed-$dev"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  if [ "$dev" = 1 ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
  else
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e .
  fi
  touch "$stamp"
fi

need=()
if [ "$dev" = 1 ]; then
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  # The remote-command tests start their own sshd on a loopback port.
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
fi
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing ${need[*]} (needed by the tests)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    # Debian starts system services on install; the tests start their own servers.
    for svc in redis-server ssh; do
      (service "$svc" stop || systemctl stop "$svc") >/dev/null 2>&1 || true
    done
  else
    echo "The tests need: ${need[*]} (redis-server and sshd on PATH or in /usr/sbin)." >&2
    echo "Install them (Debian/Ubuntu: sudo apt-get install -y ${need[*]}) and run this again." >&2
    exit 1
  fi
fi
