#!/usr/bin/env bash
# Cluster figures: a local cluster (redis-server + 2 `starling router` + 2 `starling edge`, all on
# loopback) against `starling serve` in the same run, and the recovery after a router SIGKILL.
#
#   bash benches/cluster.sh                          # USERS=100 RUNS=1 DURATION=8
#   USERS=100 RUNS=3 DURATION=10 bash benches/cluster.sh
#   RECOVERY="3:follower 3:leader 2:follower" bash benches/cluster.sh   # the recovery cases
#   SKIP_MESH=1 SKIP_SERVE=1 RECOVERY= PRESENCE="50:1000 500:600" bash benches/cluster.sh  # presence only
#
# With two CPUs, every server process (redis, routers, edges, serve) is pinned to CPU 0 and the
# load generator to CPU 1. Senders log in through edge 1 and receivers through edge 2, and the
# pairs are chosen after locating the accounts so that sender and receiver have different home
# routers: every message goes edge → router (home A) → router (home B) → edge. Server CPU is
# summed over the four Starling processes (Redis's is reported apart).
#
# Recovery cases (`ROUTERS:which`): a fresh cluster of ROUTERS routers, a messages run at
# RECOVERY_RATE msgs/s for RECOVERY_SECS s, and after KILL_AFTER s one router (a `follower` of
# the registry's Raft group, or the `leader`) gets SIGKILL. The pairs are spread over every
# ordered pair of routers, so some pairs do not involve the killed router (they show the
# unaffected path). The recovery time is loadgen's `max_gap_ms`: the longest silence of any pair.
# Timings are the configuration defaults unless STARLING_CLUSTER__* are set in the environment.
#
# Presence fan-out (`PRESENCE`, cases `K:U`, default one case 50:1000; empty skips): for each case
# a ring of U accounts (k{K}n{U}u1 …), each mutually subscribed to its K nearest, made once with
# loadgen's presence-setup (the ordinary subscription protocol), then PRESENCE_RUNS measurements of
# PRESENCE_ROUNDS rounds in which every user changes status. On the cluster (a fresh one: 2
# routers + 2 edges) even users log in through edge 1 and odd ones through edge 2, so half of each
# user's contacts sit on the other edge, and about half (the layout line says how many) are homed
# on the other router. `serve` then runs the same cases; its database lives on tmpfs (/dev/shm),
# as the cluster's Redis keeps no persistence, so neither pays for fsync while rosters are made.
#
# Knobs: SKIP_MESH=1 / SKIP_SERVE=1 skip parts, RECOVERY= (empty) skips recovery, KEEP_WORK=1 keeps
# the processes' logs, NAME names the result files, LOG_LEVEL sets the servers' log filter.
# benches/diag/nodelay.c is a diagnostic LD_PRELOAD shim (see docs/benchmarks.md, "Cluster").
#
# Every run is bounded in count and time (timeout on each command). Appends one JSON line per
# measurement to target/bench/$NAME.jsonl (NAME=cluster; cleared first) and writes
# target/bench/$NAME.md.
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${USERS:-100}
RUNS=${RUNS:-1}
DURATION=${DURATION:-8}
PAIRS=${PAIRS:-$((USERS / 2))}
RECOVERY=${RECOVERY-"3:follower"}  # RECOVERY= (empty) skips the recovery cases
RECOVERY_RATE=${RECOVERY_RATE:-1000}
RECOVERY_SECS=${RECOVERY_SECS:-20}
KILL_AFTER=${KILL_AFTER:-5}
LOG_LEVEL=${LOG_LEVEL:-info,openraft=warn}
SKIP_SERVE=${SKIP_SERVE:-}
SKIP_MESH=${SKIP_MESH:-}
PRESENCE=${PRESENCE-"50:1000"}  # K:U cases; PRESENCE= (empty) skips the presence fan-out
PRESENCE_RUNS=${PRESENCE_RUNS:-$RUNS}
PRESENCE_ROUNDS=${PRESENCE_ROUNDS:-3}
PRESENCE_RATE=${PRESENCE_RATE:-0}             # changes/s; 0 = every user at once
PRESENCE_ROUND_SECS=${PRESENCE_ROUND_SECS:-60}   # bound on each round (and the initial presences)
PRESENCE_SETUP_SECS=${PRESENCE_SETUP_SECS:-1200} # bound on making one case's rosters
PW=password
OUT=target/bench
NAME=${NAME:-cluster}
RES="$OUT/$NAME.jsonl"
mkdir -p "$OUT"
: > "$RES"
WORK=$(mktemp -d /tmp/starling-cluster-bench.XXXXXX)
echo "work directory (logs): $WORK" >&2

PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  PIDS=()
  if [ -z "${KEEP_WORK:-}" ]; then rm -rf "$WORK" ${PDIR:+"$PDIR"}; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stop the given processes (TERM, then KILL after 5 s) and forget them.
stop_pids() {
  local p keep=()
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do [[ " $* " == *" $p "* ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The address a process announced (`starling: WHAT listening on ADDR`) in its stdout file.
announced() { # file what seconds
  local deadline=$((SECONDS + $3)) a
  while :; do
    a=$(sed -n "s/^starling: $2 listening on //p" "$1" 2>/dev/null | head -n1 || true)
    [ -n "$a" ] && { echo "$a"; return 0; }
    [ $SECONDS -lt $deadline ] || { echo "no '$2' listener announced in $1" >&2; return 1; }
    sleep 0.1
  done
}

cargo build --release --locked -p starling -p starling-bench
STARLING="$PWD/target/release/starling"
LOADGEN="$PWD/target/release/loadgen"
echo "{\"scenario\":\"build\",\"commit\":\"$(git rev-parse --short HEAD)\",\"dirty_crates\":$(git status --porcelain crates | wc -l),\"date\":\"$(date -u +%FT%TZ)\",\"nproc\":$(nproc)}" >> "$RES"

# ---- redis (no persistence), pinned with the servers ----
REDIS_PORT=$(free_port)
mkdir -p "$WORK/redis"
taskset -c 0 redis-server --save "" --appendonly no --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$WORK/redis" \
  --logfile redis.log >/dev/null 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
redis-cli -p "$REDIS_PORT" ping | grep -q PONG
export STARLING_STORE__BACKEND=redis STARLING_STORE__REDIS_URLS="[\"redis://127.0.0.1:$REDIS_PORT/0\"]"

clear_offline() { # stray offline messages would reach the next run's receivers at login
  redis-cli -p "$REDIS_PORT" --scan --pattern 'starling:*:offline' | while read -r k; do
    redis-cli -p "$REDIS_PORT" del "$k" >/dev/null
  done
}
count_offline() {
  local n=0 k
  while read -r k; do n=$((n + $(redis-cli -p "$REDIS_PORT" llen "$k"))); done \
    < <(redis-cli -p "$REDIS_PORT" --scan --pattern 'starling:*:offline')
  echo "$n"
}

# ---- the cluster ----
ROUTER_PIDS=() ROUTER_GRPC=() EDGE_PIDS=() EDGE_C2S=() EDGE_HTTP=()
SEEDS=""
CLUSTER_N=0

node_env() { # id datadir
  echo STARLING_DATA_DIR="\"$2\"" STARLING_CLUSTER__NODE_ID="$1" STARLING_CLUSTER__SEEDS="$SEEDS" \
    STARLING_HTTP__LISTEN=127.0.0.1:0 STARLING_LOG__LEVEL="$LOG_LEVEL"
}

start_cluster() { # routers
  local n=$1 i
  CLUSTER_N=$((CLUSTER_N + 1))
  local dir="$WORK/cluster$CLUSTER_N"
  ROUTER_PIDS=() ROUTER_GRPC=() EDGE_PIDS=() EDGE_C2S=() EDGE_HTTP=()
  for i in $(seq "$n"); do ROUTER_GRPC+=("127.0.0.1:$(free_port)"); done
  SEEDS="[$(printf '"%s",' "${ROUTER_GRPC[@]}" | sed 's/,$//')]"
  for i in $(seq "$n"); do
    mkdir -p "$dir/r$i"
    local boot=false
    [ "$i" = 1 ] && boot=true
    env $(node_env "$i" "$dir/r$i") STARLING_CLUSTER__LISTEN="${ROUTER_GRPC[$((i - 1))]}" \
      STARLING_CLUSTER__BOOTSTRAP=$boot taskset -c 0 "$STARLING" router >"$dir/r$i/stdout" 2>"$dir/r$i/stderr" &
    ROUTER_PIDS+=($!)
    PIDS+=($!)
    announced "$dir/r$i/stdout" cluster 30 >/dev/null
  done
  for i in 1 2; do
    local id=$((10 + i))
    mkdir -p "$dir/e$i"
    env $(node_env "$id" "$dir/e$i") STARLING_C2S__LISTEN=127.0.0.1:0 STARLING_C2S__DIRECT_TLS_LISTEN= \
      STARLING_C2S__STARTTLS_REQUIRED=false STARLING_C2S__ALLOW_PLAINTEXT_AUTH=true \
      taskset -c 0 "$STARLING" edge >"$dir/e$i/stdout" 2>"$dir/e$i/stderr" &
    EDGE_PIDS+=($!)
    PIDS+=($!)
    EDGE_C2S+=("$(announced "$dir/e$i/stdout" c2s 30)")
    EDGE_HTTP+=("$(announced "$dir/e$i/stdout" http 30)")
  done
  # Wait (bounded) until every router is active, no slot is unowned and the edges are ready.
  local deadline=$((SECONDS + 60)) st=""
  until st=$(timeout 10 "$STARLING" cluster --addr "${ROUTER_GRPC[0]}" status --json 2>/dev/null) &&
    python3 -c '
import json, sys
st = json.loads(sys.argv[1]); n = int(sys.argv[2])
act = [m for m in st["members"] if m["role"] == "router" and m["state"] == "active" and m["slots"] > 0]
sys.exit(0 if st["slots_unowned"] == 0 and len(act) == n and st["leader"] else 1)' "$st" "$n"; do
    [ $SECONDS -lt $deadline ] || { echo "cluster not ready: $st" >&2; exit 1; }
    sleep 0.2
  done
  for h in "${EDGE_HTTP[@]}"; do
    until curl -fsS -m 2 "http://$h/readyz" >/dev/null 2>&1; do
      [ $SECONDS -lt $deadline ] || { echo "edge $h not ready" >&2; exit 1; }
      sleep 0.2
    done
  done
  echo "cluster $CLUSTER_N: $n routers (${ROUTER_GRPC[*]}), edges ${EDGE_C2S[*]}" >&2
  CLUSTER_STATUS=$st
}

stop_cluster() {
  local f c
  # What the nodes logged as warnings or errors (the write-up quotes them; KEEP_WORK=1 keeps logs).
  for f in "$WORK/cluster$CLUSTER_N"/*/stderr; do
    c=$(sed 's/\x1b\[[0-9;]*m//g' "$f" | grep -cE ' (WARN|ERROR) ' || true)
    echo "$f: $c warn/error lines" >&2
  done
  stop_pids "${EDGE_PIDS[@]}" "${ROUTER_PIDS[@]}"
}

# Accounts: the candidates user1 … user(4·USERS) are located, and the pairs picked from them.
CANDIDATES=$((4 * USERS))
CREATED="$WORK/created"
: > "$CREATED"
locate_all() { # file to write "name home" lines to
  local i
  for i in $(seq "$CANDIDATES"); do
    echo "user$i $(timeout 10 "$STARLING" cluster --addr "${ROUTER_GRPC[0]}" locate "user$i@localhost" |
      awk '{for (i = 1; i < NF; i++) if ($i == "router") print $(i + 1)}')"
  done > "$1"
}
# Pick PAIRS pairs whose sender and receiver have different homes, cycling over the ordered
# (sender home, receiver home) pairs; write the names file (sender, receiver, …) and a layout line.
pick_pairs() { # homes-file names-file label
  python3 - "$1" "$2" "$3" "$PAIRS" "$USERS" >> "$RES" <<'EOF'
import itertools, json, sys
homes_file, names_file, label, pairs, users = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
homes = [l.split() for l in open(homes_file) if len(l.split()) == 2]
home = dict(homes)
by = {}
for name, h in homes:
    by.setdefault(h, []).append(name)
routers = sorted(by)
combos = [(a, b) for a, b in itertools.permutations(routers, 2)]
pools = {r: list(reversed(v)) for r, v in by.items()}
out = []
for p in range(pairs):
    a, b = combos[p % len(combos)]
    if not pools[a] or not pools[b]:
        sys.exit("not enough candidates per router")
    out += [pools[a].pop(), pools[b].pop()]
open(names_file, "w").write("\n".join(out) + "\n")
# What loadgen's default numbering (pair p = user(2p+1) → user(2p+2)) would have given.
seq = [(f"user{2*p+1}", f"user{2*p+2}") for p in range(users // 2)]
seq_cross = sum(1 for s, r in seq if home.get(s) != home.get(r)) / max(1, len(seq))
cross = sum(1 for i in range(0, len(out), 2) if home[out[i]] != home[out[i + 1]])
print(json.dumps({"scenario": "layout", "label": label, "routers": len(routers), "pairs": pairs,
                  "cross_router_pairs": cross, "cross_router_fraction": cross / pairs,
                  "sequential_numbering_cross_fraction": round(seq_cross, 3),
                  "pairs_by_homes": {f"{a}->{b}": sum(1 for i in range(0, len(out), 2)
                                                      if (home[out[i]], home[out[i + 1]]) == (a, b))
                                     for a, b in combos}}))
EOF
}
create_users() { # names-file [env...]: create the accounts not yet created in redis
  local n
  while read -r n; do
    grep -qx "$n" "$CREATED" && continue
    timeout 30 "$STARLING" user add "$n@localhost" --password "$PW" >/dev/null
    echo "$n" >> "$CREATED"
  done < "$1"
}

gen() { # label users-file server-pids addr addr2 scenario args...
  local label=$1 users=$2 pids=$3 addr=$4 addr2=$5 scenario=$6; shift 6
  clear_offline
  timeout $((DURATION + 180)) taskset -c 1 "$LOADGEN" --scenario "$scenario" --addr "$addr" --addr2 "$addr2" \
    --users-file "$users" --password "$PW" --server-pid "$pids" --aux-pid "$REDIS_PID" --label "$label" "$@" |
    tee -a "$RES"
}

scenarios() { # label users-file pids addr addr2
  local run
  for run in $(seq "$RUNS"); do
    gen "$@" login --clients "$((2 * PAIRS))" --concurrency 50 --mech scram-sha-1
    gen "$@" messages --pairs "$PAIRS" --duration "$DURATION" --rate 0 --body 100
    gen "$@" messages --pairs "$PAIRS" --duration "$DURATION" --rate 5000 --body 100
  done
  gen "$@" idle --clients "$((2 * PAIRS))" --concurrency 50 --duration 3
}

# Names of every process for the per-process CPU figures.
pid_roles() { # label
  local i j=0 parts=()
  for i in "${!ROUTER_PIDS[@]}"; do parts+=("\"${ROUTER_PIDS[$i]}\":\"router$((i + 1))\""); done
  for i in "${!EDGE_PIDS[@]}"; do parts+=("\"${EDGE_PIDS[$i]}\":\"edge$((i + 1))\""); done
  parts+=("\"$REDIS_PID\":\"redis\"")
  echo "{\"scenario\":\"pids\",\"label\":\"$1\",\"pids\":{$(IFS=,; echo "${parts[*]}")}}" >> "$RES"
}

T0=$SECONDS
# ---- (a) the mesh: 2 routers + 2 edges ----
NAMES="$WORK/names-mesh"
if [ -z "$SKIP_MESH" ]; then
  echo "== cluster: 2 routers + 2 edges" >&2
  start_cluster 2
  locate_all "$WORK/homes-mesh"
  pick_pairs "$WORK/homes-mesh" "$NAMES" cluster
  create_users "$NAMES"
  pid_roles cluster
  ALL=$(IFS=,; echo "${ROUTER_PIDS[*]},${EDGE_PIDS[*]}")
  scenarios cluster "$NAMES" "$ALL" "${EDGE_C2S[0]}" "${EDGE_C2S[1]}"
  stop_cluster
  echo "mesh done at $((SECONDS - T0)) s" >&2
fi

# ---- (b) serve, the same accounts (embedded store, as in compare.sh) ----
if [ -z "$SKIP_SERVE" ]; then
  echo "== serve" >&2
  [ -s "$NAMES" ] || seq "$((2 * PAIRS))" | sed 's/^/user/' > "$NAMES"
  SDIR="$WORK/serve"
  mkdir -p "$SDIR"
  (
    unset STARLING_STORE__BACKEND STARLING_STORE__REDIS_URLS
    export STARLING_DATA_DIR="\"$SDIR\"" STARLING_C2S__LISTEN=127.0.0.1:0 STARLING_C2S__DIRECT_TLS_LISTEN= \
      STARLING_C2S__STARTTLS_REQUIRED=false STARLING_C2S__ALLOW_PLAINTEXT_AUTH=true STARLING_HTTP__LISTEN= \
      STARLING_LOG__LEVEL="$LOG_LEVEL"
    while read -r n; do timeout 30 "$STARLING" user add "$n@localhost" --password "$PW" >/dev/null; done < "$NAMES"
    exec taskset -c 0 "$STARLING" serve >"$SDIR/stdout" 2>"$SDIR/stderr"
  ) &
  SERVE_PID=$!
  PIDS+=("$SERVE_PID")
  SADDR=$(announced "$SDIR/stdout" c2s 120)
  echo "{\"scenario\":\"pids\",\"label\":\"serve\",\"pids\":{\"$SERVE_PID\":\"serve\"}}" >> "$RES"
  scenarios serve "$NAMES" "$SERVE_PID" "$SADDR" "$SADDR"
  stop_pids "$SERVE_PID"
  echo "serve done at $((SECONDS - T0)) s" >&2
fi

# ---- (c) presence fan-out: the cluster, then serve, each case K:U ----
presence_names() { # K U: the file of the ring's account names (k{K}n{U}u1 …)
  local f="$WORK/names-presence-$1-$2"
  [ -s "$f" ] || seq "$2" | sed "s/^/k$1n$2u/" > "$f"
  echo "$f"
}
gen_presence() { # label users-file pids addr addr2 K U scenario args...
  local label=$1 users=$2 pids=$3 addr=$4 addr2=$5 k=$6 u=$7 scenario=$8; shift 8
  timeout $((PRESENCE_SETUP_SECS + (PRESENCE_ROUNDS + 2) * PRESENCE_ROUND_SECS + 300)) taskset -c 1 "$LOADGEN" \
    --scenario "$scenario" --addr "$addr" --addr2 "$addr2" --users-file "$users" --password "$PW" \
    --server-pid "$pids" --aux-pid "$REDIS_PID" --label "$label" --clients "$u" --contacts "$k" \
    --concurrency 50 --setup-timeout "$PRESENCE_SETUP_SECS" --duration "$PRESENCE_ROUND_SECS" "$@" | tee -a "$RES"
}
presence_cases() { # label pids addr addr2
  local case k u names run
  for case in $PRESENCE; do
    k=${case%%:*} u=${case#*:}
    names=$(presence_names "$k" "$u")
    echo "== presence $1: K=$k U=$u (setup, then $PRESENCE_RUNS runs)" >&2
    gen_presence "$1" "$names" "$2" "$3" "$4" "$k" "$u" presence-setup
    for run in $(seq "$PRESENCE_RUNS"); do
      gen_presence "$1" "$names" "$2" "$3" "$4" "$k" "$u" presence --rounds "$PRESENCE_ROUNDS" \
        --rate "$PRESENCE_RATE"
    done
  done
}
# How many of the ring's contact pairs are homed on different routers (and log in on different edges).
presence_layout() { # names-file K U
  local homes="$1.homes" n
  while read -r n; do
    echo "$n $(timeout 10 "$STARLING" cluster --addr "${ROUTER_GRPC[0]}" locate "$n@localhost" |
      awk '{for (i = 1; i < NF; i++) if ($i == "router") print $(i + 1)}')"
  done < "$1" > "$homes"
  python3 - "$homes" "$2" "$3" >> "$RES" <<'EOF'
import json, sys
homes = [l.split() for l in open(sys.argv[1])]
k, u = int(sys.argv[2]), int(sys.argv[3])
home = [h[1] if len(h) == 2 else None for h in homes]
pairs = [(i, (i + d) % u) for i in range(u) for d in range(1, k // 2 + 1)]
cross = sum(1 for i, j in pairs if home[i] != home[j])
edges = sum(1 for i, j in pairs if i % 2 != j % 2)
print(json.dumps({"scenario": "presence-layout", "label": "cluster", "contacts": k, "users": u,
                  "pairs": len(pairs), "cross_router_fraction": round(cross / len(pairs), 3),
                  "cross_edge_fraction": round(edges / len(pairs), 3),
                  "users_by_router": {r: home.count(r) for r in sorted(set(h for h in home if h))}}))
EOF
  tail -n1 "$RES" >&2
}

if [ -n "$PRESENCE" ]; then
  echo "== presence: cluster (2 routers + 2 edges)" >&2
  start_cluster 2
  for case in $PRESENCE; do
    names=$(presence_names "${case%%:*}" "${case#*:}")
    create_users "$names"
    presence_layout "$names" "${case%%:*}" "${case#*:}"
  done
  pid_roles cluster
  ALL=$(IFS=,; echo "${ROUTER_PIDS[*]},${EDGE_PIDS[*]}")
  presence_cases cluster "$ALL" "${EDGE_C2S[0]}" "${EDGE_C2S[1]}"
  stop_cluster
  echo "presence (cluster) done at $((SECONDS - T0)) s" >&2

  echo "== presence: serve" >&2
  PDIR=$(mktemp -d /dev/shm/starling-presence-serve.XXXXXX 2>/dev/null || mktemp -d "$WORK/presence-serve.XXXXXX")
  (
    unset STARLING_STORE__BACKEND STARLING_STORE__REDIS_URLS
    export STARLING_DATA_DIR="\"$PDIR\"" STARLING_C2S__LISTEN=127.0.0.1:0 STARLING_C2S__DIRECT_TLS_LISTEN= \
      STARLING_C2S__STARTTLS_REQUIRED=false STARLING_C2S__ALLOW_PLAINTEXT_AUTH=true STARLING_HTTP__LISTEN= \
      STARLING_LOG__LEVEL="$LOG_LEVEL"
    for case in $PRESENCE; do
      while read -r n; do timeout 30 "$STARLING" user add "$n@localhost" --password "$PW" >/dev/null; done \
        < "$(presence_names "${case%%:*}" "${case#*:}")"
    done
    exec taskset -c 0 "$STARLING" serve >"$PDIR/stdout" 2>"$PDIR/stderr"
  ) &
  PSERVE_PID=$!
  PIDS+=("$PSERVE_PID")
  PADDR=$(announced "$PDIR/stdout" c2s 300)
  echo "{\"scenario\":\"pids\",\"label\":\"serve\",\"pids\":{\"$PSERVE_PID\":\"serve\"}}" >> "$RES"
  presence_cases serve "$PSERVE_PID" "$PADDR" "$PADDR"
  stop_pids "$PSERVE_PID"
  echo "presence (serve) done at $((SECONDS - T0)) s" >&2
fi

# ---- (d) recovery after a router SIGKILL ----
for case in $RECOVERY; do
  n=${case%%:*} which=${case#*:}
  label="recovery-${n}r-$which"
  echo "== $label" >&2
  start_cluster "$n"
  locate_all "$WORK/homes-$label"
  pick_pairs "$WORK/homes-$label" "$WORK/names-$label" "$label"
  create_users "$WORK/names-$label"
  pid_roles "$label"
  leader=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["leader"])' "$CLUSTER_STATUS")
  if [ "$which" = leader ]; then victim=$leader; else victim=$(( leader % n + 1 )); fi
  vpid=${ROUTER_PIDS[$((victim - 1))]}
  ALL=$(IFS=,; echo "${ROUTER_PIDS[*]},${EDGE_PIDS[*]}")
  clear_offline
  errf="$WORK/loadgen-$label.stderr"
  : > "$errf"
  timeout $((RECOVERY_SECS + 180)) taskset -c 1 "$LOADGEN" --scenario messages --addr "${EDGE_C2S[0]}" \
    --addr2 "${EDGE_C2S[1]}" --users-file "$WORK/names-$label" --password "$PW" --server-pid "$ALL" \
    --aux-pid "$REDIS_PID" --label "$label" --pairs "$PAIRS" --duration "$RECOVERY_SECS" \
    --rate "$RECOVERY_RATE" --body 100 > "$WORK/loadgen-$label.out" 2> "$errf" &
  lg=$!
  deadline=$((SECONDS + 120))
  until grep -q "loadgen: measuring" "$errf"; do
    kill -0 "$lg" 2>/dev/null || { cat "$errf" >&2; exit 1; }
    [ $SECONDS -lt $deadline ] || { echo "loadgen never started measuring" >&2; exit 1; }
    sleep 0.02
  done
  t_start=$(date +%s%N)
  sleep "$KILL_AFTER"
  kill -KILL "$vpid"
  t_kill=$(date +%s%N)
  wait "$vpid" 2>/dev/null || true
  echo "killed router $victim (pid $vpid, leader was $leader) at +$(( (t_kill - t_start) / 1000000 )) ms" >&2
  wait "$lg" || { echo "loadgen failed:" >&2; cat "$errf" >&2; exit 1; }
  cat "$WORK/loadgen-$label.out" | tee -a "$RES"
  offline=$(count_offline)
  st=$(timeout 10 "$STARLING" cluster --addr "${ROUTER_GRPC[$(( victim % n ))]}" status --json 2>/dev/null || echo null)
  python3 - "$label" "$victim" "$leader" "$(( (t_kill - t_start) / 1000000 ))" "$offline" "$st" >> "$RES" <<'EOF'
import json, sys
label, victim, leader, kill_ms, offline, st = sys.argv[1:7]
st = json.loads(st) if st != "null" else None
print(json.dumps({"scenario": "kill", "label": label, "killed_router": int(victim), "leader_before": int(leader),
                  "kill_at_ms": int(kill_ms), "offline_stored_after": int(offline),
                  "status_after": None if st is None else {"leader": st["leader"], "slots_unowned": st["slots_unowned"],
                      "routers": {m["id"]: [m["state"], m["slots"]] for m in st["members"] if m["role"] == "router"}}}))
EOF
  tail -n1 "$RES" >&2
  stop_cluster
  echo "$label done at $((SECONDS - T0)) s" >&2
done

echo "{\"scenario\":\"elapsed\",\"seconds\":$((SECONDS - T0))}" >> "$RES"
python3 benches/summarize.py "$RES" > "$OUT/$NAME.md"
cat "$OUT/$NAME.md"
