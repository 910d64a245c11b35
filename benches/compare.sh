#!/usr/bin/env bash
# Side-by-side figures: Starling, Prosody and ejabberd on loopback, each server pinned to CPU 0 and
# the load generator to CPU 1, the same scenarios against all three in one run. Installs Prosody
# and ejabberd from Debian's packages when missing. Every run is bounded in count and time.
#
#   bash benches/compare.sh                 # USERS=100 RUNS=3 DURATION=10
#   USERS=200 RUNS=5 bash benches/compare.sh
#   PARTS=presence bash benches/compare.sh  # only the presence fan-out
#
# PARTS picks what runs: `basic` (login and messages RUNS times, then idle sessions on the server
# restarted fresh), `logins` (login storms only, every
# server started at once and their storms taken in turn, RUNS times, so the noise of a shared
# machine falls on all servers alike) and `presence` (the fan-out: a ring of
# PRESENCE_USERS users with PRESENCE_CONTACTS mutual contacts each, made once per server with
# loadgen's presence-setup through the ordinary subscription protocol, then RUNS measurements of
# PRESENCE_ROUNDS rounds in which every user changes status; PRESENCE_RATE changes/s, 0 = all at
# once). The ring's accounts are named after its shape (PRESENCE_PREFIX, e.g. k50n1000u1 …), so
# rosters of another shape never add contacts. ejabberd keeps accounts and rosters in
# /var/lib/ejabberd between runs, so its setup finds them made; Starling and Prosody start from
# fresh data directories.
#
# `floor` is not a server: login_floor (benches/src/bin/login_floor.rs) answers the login storm
# with the least work a server can do (the raw framing, the SCRAM arithmetic, canned replies), so
# its CPU per login is what the kernel and the runtime cost per login on this machine, a floor
# no server on the same runtime goes below. Only the login storm runs against it.
#
# Writes one JSON line per measurement to target/bench/results.jsonl and the table to
# target/bench/table.md (copied into docs/benchmarks.md by hand with the run's context).
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${USERS:-100}
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
PAIRS=${PAIRS:-50}
SERVERS=${SERVERS:-"starling prosody ejabberd floor"}
PARTS=${PARTS:-"basic presence"}
LOGIN_ROUNDS=${LOGIN_ROUNDS:-3}     # rounds of USERS logins per storm in the `logins` part
PRESENCE_USERS=${PRESENCE_USERS:-1000}
PRESENCE_CONTACTS=${PRESENCE_CONTACTS:-50}
PRESENCE_ROUNDS=${PRESENCE_ROUNDS:-3}
PRESENCE_RATE=${PRESENCE_RATE:-0}
PRESENCE_ROUND_SECS=${PRESENCE_ROUND_SECS:-60}   # bound on each round (and the initial presences)
PRESENCE_SETUP_SECS=${PRESENCE_SETUP_SECS:-1200} # bound on making the rosters
PRESENCE_PREFIX=${PRESENCE_PREFIX:-k${PRESENCE_CONTACTS}n${PRESENCE_USERS}u}
PW=password
# The servers listen on 25222 (Starling), 25223 (Prosody), 25224 (ejabberd) and 25225 (the login
# floor): below the
# kernel's ephemeral range (32768–60999 here), so a login storm's client ports never hold them.
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
FLOOR="$PWD/target/release/login_floor"

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

has_part() { [[ " $PARTS " == *" $1 "* ]]; }
# The accounts each server needs, one name a line: user1 … userUSERS, then the presence ring's.
accounts() {
  seq "$USERS" | sed 's/^/user/'
  if has_part presence; then seq "$PRESENCE_USERS" | sed "s/^/$PRESENCE_PREFIX/"; fi
}

gen_presence() { # label port pid scenario args...: longer bounds than gen
  local label=$1 port=$2 pid=$3 scenario=$4; shift 4
  timeout $((PRESENCE_SETUP_SECS + (PRESENCE_ROUNDS + 2) * PRESENCE_ROUND_SECS + 300)) taskset -c 1 "$LOADGEN" \
    --scenario "$scenario" --addr "127.0.0.1:$port" --prefix "$PRESENCE_PREFIX" --password "$PW" --server-pid "$pid" \
    --label "$label" --clients "$PRESENCE_USERS" --contacts "$PRESENCE_CONTACTS" --concurrency 50 \
    --setup-timeout "$PRESENCE_SETUP_SECS" --duration "$PRESENCE_ROUND_SECS" "$@" | tee -a "$OUT/results.jsonl"
}

scenarios() { # label port pid
  if has_part basic; then
    for run in $(seq "$RUNS"); do
      gen "$1" "$2" "$3" login --clients "$USERS" --concurrency 50 --mech scram-sha-1
      gen "$1" "$2" "$3" messages --pairs "$PAIRS" --duration "$DURATION" --rate 0 --body 100
      gen "$1" "$2" "$3" messages --pairs "$PAIRS" --duration "$DURATION" --rate 5000 --body 100
    done
  fi
  if has_part presence; then
    # Rosters once (verified on a sample), then measurements that only log in and change status.
    gen_presence "$1" "$2" "$3" presence-setup
    for run in $(seq "$RUNS"); do
      gen_presence "$1" "$2" "$3" presence --rounds "$PRESENCE_ROUNDS" --rate "$PRESENCE_RATE"
    done
  fi
}

start_starling() {
  STARLING_DIR=$(mktemp -d)
  export STARLING_DATA_DIR="\"$STARLING_DIR\"" STARLING_C2S__LISTEN=127.0.0.1:25222 STARLING_C2S__DIRECT_TLS_LISTEN= \
    STARLING_C2S__STARTTLS_REQUIRED=false STARLING_C2S__ALLOW_PLAINTEXT_AUTH=true STARLING_HTTP__LISTEN= \
    STARLING_LOG__LEVEL=warn
  for n in $(accounts); do "$STARLING" user add "$n@localhost" --password "$PW" >/dev/null; done
  taskset -c 0 "$STARLING" serve >"$STARLING_DIR/stdout" 2>"$STARLING_DIR/stderr" &
  PID_starling=$!
  unset STARLING_DATA_DIR STARLING_C2S__LISTEN STARLING_C2S__DIRECT_TLS_LISTEN STARLING_C2S__STARTTLS_REQUIRED \
    STARLING_C2S__ALLOW_PLAINTEXT_AUTH STARLING_HTTP__LISTEN STARLING_LOG__LEVEL
  wait_port 127.0.0.1:25222 30
}

stop_starling() {
  kill "$PID_starling"; wait "$PID_starling" 2>/dev/null || true
  rm -rf "$STARLING_DIR"
}

start_prosody() {
  PROSODY_DIR=$(mktemp -d); local dir=$PROSODY_DIR; chown prosody "$dir"
  sed "s#@DATA@#$dir#g; s#@PORT@#25223#g" benches/peers/prosody.cfg.lua.in > "$dir/prosody.cfg.lua"
  # One prosodyctl call per account takes minutes for thousands: register the first account of
  # each set and copy its file (a SCRAM record does not depend on the user name).
  su -s /bin/sh prosody -c "prosodyctl --config $dir/prosody.cfg.lua register user1 localhost $PW" >/dev/null
  local acc="$dir/data/localhost/accounts" i
  for i in $(seq 2 "$USERS"); do cp -p "$acc/user1.dat" "$acc/user$i.dat"; done
  if has_part presence; then
    su -s /bin/sh prosody -c \
      "prosodyctl --config $dir/prosody.cfg.lua register ${PRESENCE_PREFIX}1 localhost $PW" >/dev/null
    for i in $(seq 2 "$PRESENCE_USERS"); do cp -p "$acc/${PRESENCE_PREFIX}1.dat" "$acc/$PRESENCE_PREFIX$i.dat"; done
  fi
  # su starts from PAM's soft limit of 1024 open files, too few for the presence ring's sessions.
  su -s /bin/sh prosody -c "ulimit -n \$(ulimit -Hn) && taskset -c 0 prosody --config $dir/prosody.cfg.lua"
  wait_port 127.0.0.1:25223 30
  # Prosody may open its port before it writes its pid file.
  local deadline=$((SECONDS + 10))
  until [ -s "$dir/prosody.pid" ] || [ $SECONDS -ge $deadline ]; do sleep 0.2; done
  PID_prosody=$(cat "$dir/prosody.pid")
}

stop_prosody() {
  kill "$PID_prosody" || true
  # Prosody can linger after SIGTERM; a stale one must not hold the port for the next run.
  local deadline=$((SECONDS + 10))
  while kill -0 "$PID_prosody" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  kill -9 "$PID_prosody" 2>/dev/null || true
  rm -rf "$PROSODY_DIR"
}

start_ejabberd() {
  local cfg=/etc/ejabberd/ejabberd.yml
  [ -f "$cfg.starling-bench-backup" ] || cp "$cfg" "$cfg.starling-bench-backup"
  sed "s#@PORT@#25224#g" benches/peers/ejabberd.yml > "$cfg"
  # As the ejabberd user, so it keeps the raised open-files limit (ejabberdctl run by root starts
  # it through su, which resets it to PAM's 1024: too few for the presence ring's sessions).
  su -s /bin/sh ejabberd -c "cd /var/lib/ejabberd && ulimit -n \$(ulimit -Hn) && HOME=/var/lib/ejabberd \
    taskset -c 0 ejabberdctl start" || { echo "ejabberdctl start failed (a node still running?)" >&2; return 1; }
  ejabberdctl started
  # Accounts persist in /var/lib/ejabberd. Each ejabberdctl call starts a VM (~0.3 s, minutes for a
  # thousand), so one erl_call on the running node registers them all (existing ones are kept).
  if have erl_call; then
    accounts | sed "s/.*/<<\"&\">>/" | paste -sd, |
      sed "s/.*/[ejabberd_auth:try_register(U, <<\"localhost\">>, <<\"$PW\">>) || U <- [&]], ok./" |
      erl_call -sname ejabberd@localhost -c "$(cat /var/lib/ejabberd/.erlang.cookie)" -e >/dev/null
  else
    for n in $(accounts); do ejabberdctl register "$n" localhost "$PW" >/dev/null 2>&1 || true; done
  fi
  wait_port 127.0.0.1:25224 30
  PID_ejabberd=$(pgrep -f 'beam.smp.*ejabberd' | head -n1)
  taskset -acp 0 "$PID_ejabberd" >/dev/null
}

stop_ejabberd() {
  local cfg=/etc/ejabberd/ejabberd.yml
  ejabberdctl stop >/dev/null || true
  # `stop` returns before the node is down; the next start would find it running.
  local deadline=$((SECONDS + 30))
  while pgrep -f 'beam.smp.*ejabberd' >/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  cp "$cfg.starling-bench-backup" "$cfg"
}

start_floor() {
  # Single-threaded, as `starling serve` is when pinned to one core.
  taskset -c 0 "$FLOOR" --listen 127.0.0.1:25225 --password "$PW" --runtime current >/dev/null 2>&1 &
  PID_floor=$!
  wait_port 127.0.0.1:25225 30
}

stop_floor() {
  kill "$PID_floor"; wait "$PID_floor" 2>/dev/null || true
}

declare -A PORT=([starling]=25222 [prosody]=25223 [ejabberd]=25224 [floor]=25225)

# A server already listening on a port (a stray from an earlier run) would take the load while
# the measured process, unable to bind, is gone: refuse to start over it.
port_free() { # port
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    echo "port $1 is already in use: stop what listens there first" >&2
    exit 1
  fi
}

run_server() { # name: start it, run the selected parts against it, stop it
  port_free "${PORT[$1]}"
  "start_$1"
  local pid_var="PID_$1"
  if [ "$1" = floor ]; then
    # Not a server: only the login storm runs against it.
    if has_part basic; then
      for run in $(seq "$RUNS"); do
        gen floor "${PORT[floor]}" "${!pid_var}" login --clients "$USERS" --concurrency 50 --mech scram-sha-1
      done
    fi
  else
    scenarios "$1" "${PORT[$1]}" "${!pid_var}"
    if has_part basic; then
      # Memory per idle session is the RSS growth of a freshly started server (issue 5): after
      # the storms, what an allocator keeps or has handed back would be measured too. The
      # sessions log in with SCRAM, as the storms do: PLAIN makes a server derive the password
      # (PBKDF2) on worker threads, whose stacks and allocator arenas are not sessions' memory.
      "stop_$1"
      port_free "${PORT[$1]}"
      "start_$1"
      gen "$1" "${PORT[$1]}" "${!pid_var}" idle --clients "$USERS" --concurrency 50 --duration 3 --mech scram-sha-1
    fi
  fi
  "stop_$1"
}

if has_part basic || has_part presence; then
  for s in $SERVERS; do
    echo "== $s" >&2
    run_server "$s"
  done
fi
if has_part logins; then
  # Every server up at once (idle ones cost CPU 0 nothing), and their login storms taken in
  # turn, run after run: a noisy minute then weighs on all of them, not on one server's runs.
  for s in $SERVERS; do port_free "${PORT[$s]}"; "start_$s"; done
  for run in $(seq "$RUNS"); do
    for s in $SERVERS; do
      echo "== logins: run $run, $s" >&2
      pid_var="PID_$s"
      gen "$s" "${PORT[$s]}" "${!pid_var}" login --clients "$USERS" --concurrency 50 --mech scram-sha-1 \
        --login-rounds "$LOGIN_ROUNDS"
    done
  done
  for s in $SERVERS; do "stop_$s"; done
fi
python3 benches/summarize.py "$OUT/results.jsonl" > "$OUT/table.md"
cat "$OUT/table.md"
