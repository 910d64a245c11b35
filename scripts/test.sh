#!/usr/bin/env bash
# The whole test suite, installing what it needs when missing. This is the README's test command
# and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1; }
apt_install() {
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; fi
}

# redis-server backs the cluster presence suites; install it up front so the command never changes.
have redis-server || apt_install redis-server
have python3 || apt_install python3 python3-venv

echo "== format"
cargo fmt --all -- --check

echo "== build"
cargo build --workspace --all-targets --locked

echo "== lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== unit and end-to-end tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

echo "== interoperability (slixmpp, Twisted Words)"
STARLING_BIN="$PWD/target/debug/starling" bash tests/interop/run.sh

echo "== operations (helm chart, Kubernetes schemas, promtool)"
bash scripts/ops-check.sh
