#!/usr/bin/env bash
# Interoperability suite: the real starling binary driven by slixmpp and Twisted Words.
# Creates (or reuses) the virtualenv at <repo>/.venv, installs the pinned requirements, and runs
# pytest. Exits non-zero when anything fails. Extra arguments go to pytest (e.g. -k roster).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${INTEROP_VENV:-$root/.venv}"

if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv "$venv"; then
    # Debian splits venv/ensurepip into python3-venv.
    rm -rf "$venv"
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
      sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    python3 -m venv "$venv"
  fi
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$root/tests/interop/requirements.txt"

export STARLING_BIN="${STARLING_BIN:-$root/target/debug/starling}"
if [ ! -x "$STARLING_BIN" ]; then
  echo "run.sh: no starling binary at $STARLING_BIN (cargo build -p starling, or set STARLING_BIN)" >&2
  exit 1
fi
cd "$root"
exec "$venv/bin/python" -m pytest -q tests/interop "$@"
