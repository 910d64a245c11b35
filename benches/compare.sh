#!/usr/bin/env bash
# Side-by-side figures: Starling, Prosody and ejabberd on loopback, each server pinned to CPU 0 and
# the load generator to CPU 1, the same scenarios against all three in one run. Installs Prosody
# and ejabberd from Debian's packages when missing. Every run is bounded in count and time.
#
#   bash benches/compare.sh                 # USERS=100 RUNS=3 DURATION=10
#   USERS=200 RUNS=5 bash benches/compare.sh
#
# Writes one JSON line per measurement to target/bench/results.jsonl and the table to
# target/bench/table.md (copied into docs/benchmarks.md by hand with the run's context).
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${USERS:-100}
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
PAIRS=${PAIRS:-50}
SERVERS=${SERVERS:-"starling prosody ejabberd"}
PW=password
OUT=target/bench
mkdir -p "$OUT"
: > "$OUT/results.jsonl"

have() { command -v "$1" >/dev/null 2>&1; }
if ! have prosody || ! have ejabberdctl; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prosody ejabberd >/dev/null
fi
# The packages start system services; the benchmark runs its own instances.
systemctl stop prosody ejabberd 2>/dev/null || service prosody stop 2>/dev/null || true
service ejabberd stop 2>/dev/null || true
pkill -x prosody 2>/dev/null || true

cargo build --release --locked -p starling -p starling-bench
STARLING="$PWD/target/release/starling"
LOADGEN="$PWD/target/release/loadgen"

wait_port() { # host:port, seconds
  local deadline=$((SECONDS + $2))
  until (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "port $1 did not open" >&2; return 1; }
    sleep 0.2
  done
}

gen() { # label port pid scenario args...
  local label=$1 port=$2 pid=$3 scenario=$4; shift 4
  timeout 120 taskset -c 1 "$LOADGEN" --scenario "$scenario" --addr "127.0.0.1:$port" --prefix user \
    --password "$PW" --server-pid "$pid" --label "$label" "$@" | tee -a "$OUT/results.jsonl"
}

scenarios() { # label port pid
  for run in $(seq "$RUNS"); do
    gen "$1" "$2" "$3" login --clients "$USERS" --concurrency 50 --mech scram-sha-1
    gen "$1" "$2" "$3" messages --pairs "$PAIRS" --duration "$DURATION" --rate 0 --body 100
    gen "$1" "$2" "$3" messages --pairs "$PAIRS" --duration "$DURATION" --rate 5000 --body 100
  done
  gen "$1" "$2" "$3" idle --clients "$USERS" --concurrency 50 --duration 3
}

run_starling() {
  local dir; dir=$(mktemp -d)
  export STARLING_DATA_DIR="\"$dir\"" STARLING_C2S__LISTEN=127.0.0.1:35222 STARLING_C2S__DIRECT_TLS_LISTEN= \
    STARLING_C2S__STARTTLS_REQUIRED=false STARLING_C2S__ALLOW_PLAINTEXT_AUTH=true STARLING_HTTP__LISTEN= \
    STARLING_LOG__LEVEL=warn
  for i in $(seq "$USERS"); do "$STARLING" user add "user$i@localhost" --password "$PW" >/dev/null; done
  taskset -c 0 "$STARLING" serve >"$dir/stdout" 2>"$dir/stderr" &
  local pid=$!
  wait_port 127.0.0.1:35222 30
  scenarios starling 35222 "$pid"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  unset STARLING_DATA_DIR STARLING_C2S__LISTEN STARLING_C2S__DIRECT_TLS_LISTEN STARLING_C2S__STARTTLS_REQUIRED \
    STARLING_C2S__ALLOW_PLAINTEXT_AUTH STARLING_HTTP__LISTEN STARLING_LOG__LEVEL
  rm -rf "$dir"
}

run_prosody() {
  local dir; dir=$(mktemp -d); chown prosody "$dir"
  sed "s#@DATA@#$dir#g; s#@PORT@#35223#g" benches/peers/prosody.cfg.lua.in > "$dir/prosody.cfg.lua"
  for i in $(seq "$USERS"); do
    su -s /bin/sh prosody -c "prosodyctl --config $dir/prosody.cfg.lua register user$i localhost $PW" >/dev/null
  done
  su -s /bin/sh prosody -c "taskset -c 0 prosody --config $dir/prosody.cfg.lua"
  wait_port 127.0.0.1:35223 30
  scenarios prosody 35223 "$(cat "$dir/prosody.pid")"
  kill "$(cat "$dir/prosody.pid")" || true
  rm -rf "$dir"
}

run_ejabberd() {
  local cfg=/etc/ejabberd/ejabberd.yml
  [ -f "$cfg.starling-bench-backup" ] || cp "$cfg" "$cfg.starling-bench-backup"
  sed "s#@PORT@#35224#g" benches/peers/ejabberd.yml > "$cfg"
  ulimit -n 65536 || true
  taskset -c 0 ejabberdctl start
  ejabberdctl started
  for i in $(seq "$USERS"); do ejabberdctl register "user$i" localhost "$PW" >/dev/null 2>&1 || true; done
  wait_port 127.0.0.1:35224 30
  local pid; pid=$(pgrep -f 'beam.smp.*ejabberd' | head -n1)
  taskset -acp 0 "$pid" >/dev/null
  scenarios ejabberd 35224 "$pid"
  ejabberdctl stop >/dev/null || true
  cp "$cfg.starling-bench-backup" "$cfg"
}

for s in $SERVERS; do
  echo "== $s" >&2
  "run_$s"
done
python3 benches/summarize.py "$OUT/results.jsonl" > "$OUT/table.md"
cat "$OUT/table.md"
