#!/usr/bin/env bash
# Interop suite: slixmpp and Twisted Words against the real binary. Creates .venv when missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r "$root/tests/interop/requirements.txt"
export STARLING_BIN="${STARLING_BIN:-$root/target/debug/starling}"
cd "$root/tests/interop"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" .
