#!/usr/bin/env bash
# A real Prometheus server scraping a small live cluster: every alert rule and every dashboard
# query must evaluate against live data. Run by scripts/ops-check.sh (its last step); also useful
# alone. Prints one "ok: ..." line per check and exits non-zero on the first failure.
#
# On loopback only, in a temporary directory removed on exit (every process it starts is killed):
#   - redis-server, two routers (node 1 bootstraps) and one edge, as in docs/cluster.md, plus one
#     `starling serve` node (the alerts must tell it apart from the cluster);
#   - a little client traffic on the edge (two accounts on different routers: logins, presence,
#     messages across routers, an offline message, stanza errors, one failed login);
#   - Debian's prometheus with scrape and rule intervals of 1 s, deploy/prometheus/alerts.yml as
#     its rule file and every node as a static target;
# then, through Prometheus' HTTP API: targets up, every rule group loaded and evaluated with
# health "ok", every alert expression and every panel and variable query of
# deploy/grafana/starling.json evaluating with status "success" on live series, every metric they
# (or docs/metrics.md) name present, counters moved under the traffic, and no alert active on the
# healthy cluster.
#
# Needs: $STARLING_BIN (default target/debug/starling, never built here), prometheus,
# redis-server, python3 ($PYTHON; PyYAML optional). ops-check.sh installs the Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

STARLING_BIN="${STARLING_BIN:-target/debug/starling}"
PYTHON="${PYTHON:-python3}"
ok() { echo "ok: $*"; }
die() { echo "FAIL: $*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

[ -x "$STARLING_BIN" ] || die "$STARLING_BIN is not built (cargo build -p starling)"
# Not a STARLING_* name: the nodes' environment is cleared of those.
BIN="$(cd "$(dirname "$STARLING_BIN")" && pwd)/$(basename "$STARLING_BIN")"
for tool in prometheus redis-server "$PYTHON"; do have "$tool" || die "$tool is missing"; done

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  local rc=$?
  if [ "$rc" != 0 ] && [ -d "$WORK" ]; then
    # What the nodes said, for the failure at hand.
    for f in "$WORK"/*.err "$WORK"/prometheus.log "$WORK"/traffic.out; do
      [ -s "$f" ] && { echo "--- $(basename "$f") (last lines)" >&2; tail -n 15 "$f" >&2; }
    done
  fi
  # Only the processes this script started, by pid; a throwaway cluster needs no drain.
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
START=$SECONDS
PY="$WORK/prometheus_check.py"

cat >"$PY" <<'PYEOF'
"""The Python half of scripts/prometheus-check.sh: waits and checks through HTTP APIs."""
import base64, json, math, os, re, socket, sys, time, urllib.error, urllib.parse, urllib.request

METRIC_RE = re.compile(r"starling_[a-z_]+")
# Metrics that a healthy cluster under light traffic legitimately does not export, with the reason.
# Anything else named by an alert, a panel or docs/metrics.md must have a live series.
ABSENT = {}


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def get(base, path, **params):
    url = f"{base}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params, doseq=True)
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


def query(base, expr):
    try:
        d = get(base, "/api/v1/query", query=expr)
    except urllib.error.HTTPError as e:
        d = json.load(e)
    if d.get("status") != "success":
        fail(f"query {expr!r}: {d.get('errorType')}: {d.get('error')}")
    return d["data"]["result"]


def base_names(names):
    return {re.sub(r"_(bucket|sum|count)$", "", m) for m in names}


def selectors(expr):
    """The vector selectors of a PromQL expression naming starling_ metrics or `up`."""
    out = []
    for m in re.finditer(r"(?<![\w:\"])(starling_[a-z_]+|up)\s*(\{[^}]*\})?", expr):
        out.append(m.group(1) + (m.group(2) or ""))
    return out


def subst_grafana(expr):
    """Grafana's variables: intervals become durations, template variables match everything."""
    intervals = {"__rate_interval": "1m", "__interval": "15s", "__range": "1m", "__range_s": "60"}
    expr = re.sub(r'(\w+)\s*!?=~?\s*"\$\{?(\w+)(?::\w+)?\}?"',
                  lambda m: m.group(0) if m.group(2) in intervals else f'{m.group(1)}=~".*"', expr)
    return re.sub(r"\$\{?(\w+)(?::\w+)?\}?", lambda m: intervals.get(m.group(1), ".*"), expr)


def wait(what, timeout, probe, interval=0.2):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            r = probe()
            if r:
                return r
        except Exception as e:  # not up yet
            last = e
        time.sleep(interval)
    fail(f"timed out after {timeout} s waiting for {what}" + (f" (last error: {last})" if last else ""))


def cmd_wait_redis(port):
    def ping():
        with socket.create_connection(("127.0.0.1", int(port)), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    wait(f"redis-server on port {port}", 10, ping, 0.1)


def cmd_free_ports(n):
    socks = [socket.socket() for _ in range(int(n))]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def cmd_wait_cluster(bin_, addr, routers, edges):
    import subprocess
    routers, edges = int(routers), int(edges)
    # No STARLING_* from the caller (STARLING_BIN would be an unknown configuration key).
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARLING_")}
    env.update(RUST_BACKTRACE="0", RUST_LIB_BACKTRACE="0")

    def status():
        p = subprocess.run([bin_, "cluster", "--addr", addr, "status", "--json"], capture_output=True, timeout=5,
                           env=env)
        if p.returncode:
            return None
        d = json.loads(p.stdout)
        active = [m for m in d["members"] if m["state"] == "active"]
        r = [m for m in active if m["role"] == "router" and m["slots"] > 0]
        e = [m for m in active if m["role"] == "edge"]
        if d["leader"] and d["slots_unowned"] == 0 and len(r) == routers and len(e) == edges:
            return d
    d = wait(f"{routers} active routers owning every slot and {edges} edge(s)", 30, status, 0.25)
    print(f"leader {d['leader']}, term {d['term']}, {routers} routers active "
          f"({', '.join(str(m['slots']) for m in d['members'] if m['role'] == 'router')} slots), "
          f"{edges} edge active, slots_unowned 0")


def cmd_wait_ready(*addrs):
    def ready(a):
        return lambda: urllib.request.urlopen(f"http://{a}/readyz", timeout=2).status == 200
    for a in addrs:
        wait(f"http://{a}/readyz", 20, ready(a))


# --- the traffic --------------------------------------------------------------------------------

NS = "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"


class Client:
    """Just enough of a client over plain TCP (the edge allows SASL PLAIN without TLS)."""

    def __init__(self, addr, timeout=10):
        host, port = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=timeout)
        self.buf, self.timeout = "", timeout

    def send(self, x):
        self.s.sendall(x.encode())

    def expect(self, pattern, what):
        rx = re.compile(pattern, re.S)
        end = time.monotonic() + self.timeout
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            left = end - time.monotonic()
            if left <= 0:
                fail(f"traffic: timed out waiting for {what}; got {self.buf[-300:]!r}")
            self.s.settimeout(left)
            try:
                chunk = self.s.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                fail(f"traffic: connection closed waiting for {what}; got {self.buf[-300:]!r}")
            self.buf += chunk.decode()

    def open(self):
        self.send(f"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' {NS}>")
        self.expect(r"</stream:features>", "stream features")

    def auth(self, user, pw):
        self.open()
        tok = base64.b64encode(f"\0{user}\0{pw}".encode()).decode()
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{tok}</auth>")
        return self.expect(r"<(success|failure)\b", "SASL outcome").group(1) == "success"

    def login(self, user, pw, resource):
        if not self.auth(user, pw):
            fail(f"traffic: {user} could not log in")
        self.open()
        self.send("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  f"<resource>{resource}</resource></bind></iq>")
        self.expect(r"<iq[^>]*id=['\"]bind['\"].*?</iq>", "bind result")


def cmd_traffic(addr, prom, a_user, a_pw, b_user, b_pw, stop_file):
    """Two accounts (on different routers): presence, messages both ways, one message stored
    offline and delivered at login, stanza errors, a ping, failed logins. In two rounds with a
    scrape between them, so that labelled counters (which appear at their first increment) exist
    in Prometheus before they move. Both accounts stay online (sessions, connections) until
    stop_file exists or 60 s passed."""
    a = Client(addr)
    a.login(a_user, a_pw, "a")
    a.send("<presence/>")
    a.send(f"<message to='{b_user}@localhost' type='chat' id='off'><body>while you were away</body></message>")
    a.send("<iq type='get' id='e1' to='localhost'><query xmlns='urn:example:nothing'/></iq>")
    a.expect(r"<iq[^>]*type=['\"]error['\"].*?</iq>", "the error for an unknown iq")
    b = Client(addr)
    b.login(b_user, b_pw, "b")
    b.send("<presence/>")
    b.expect(r"while you were away<", "the offline message")
    b.send(f"<presence to='{a_user}@localhost/a'/>")

    def round_(n):
        a.send(f"<message to='nobody@localhost' type='chat' id='e{n}'><body>anyone?</body></message>")
        a.expect(r"<message[^>]*type=['\"]error['\"].*?</message>", "the error for nobody@localhost")
        for i in range(3):
            a.send(f"<message to='{b_user}@localhost/b' type='chat' id='m{n}{i}'><body>message {n}.{i}</body></message>")
        for i in range(3):
            b.expect(rf"message {n}\.{i}<", f"message {n}.{i}")
        b.send(f"<message to='{a_user}@localhost/a' type='chat' id='r{n}'><body>got round {n}</body></message>")
        a.expect(rf"got round {n}<", "the reply")
        a.send(f"<iq type='get' id='ping{n}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        a.expect(rf"<iq[^>]*id=['\"]ping{n}['\"]", "the ping result")
        c = Client(addr)
        if c.auth(a_user, "not-the-password"):
            fail("traffic: a wrong password was accepted")
        c.s.close()

    round_(1)
    # Every labelled counter of round 1 is in Prometheus before round 2 moves it.
    wait("round 1 in Prometheus", 15, lambda: all(query(prom, q) for q in (
        'starling_auth_total{result="failed"}', "starling_stanza_errors_total",
        'starling_stanzas_out_total', 'starling_routing_latency_seconds_count > 0', "sum(starling_sessions) >= 2")))
    round_(2)
    print("traffic done", flush=True)
    end = time.monotonic() + 60
    while not os.path.exists(stop_file) and time.monotonic() < end:
        time.sleep(0.1)


# --- Prometheus ---------------------------------------------------------------------------------

def cmd_wait_prometheus(base, targets):
    targets = int(targets)
    wait("Prometheus /-/ready", 20, lambda: urllib.request.urlopen(base + "/-/ready", timeout=2).status == 200)

    def up():
        t = get(base, "/api/v1/targets", state="active")["data"]["activeTargets"]
        return len(t) == targets and all(x["health"] == "up" for x in t) and t

    t = wait(f"{targets} targets up", 15, up)
    # A few scrapes of every target before the traffic.
    wait("3 scrapes of every target", 10,
         lambda: all(float(s["value"][1]) >= 3 for s in query(base, "count_over_time(up[1m])"))
         and len(query(base, "count_over_time(up[1m])")) == targets)
    jobs = sorted({x["labels"]["job"] for x in t})
    print(f"{targets} targets up (jobs {', '.join(jobs)}), scraped every 1 s")


def cmd_wait_traffic_scraped(base):
    """The traffic's effect is in Prometheus, and one more scrape after it for the rates."""
    def seen():
        failed = query(base, 'sum(starling_auth_total{result="failed"})')
        return failed and float(failed[0]["value"][1]) >= 2
    wait("the traffic to show in Prometheus", 15, seen)
    time.sleep(2.2)


def alert_rules_file(path):
    """Alert names by group in alerts.yml (PyYAML when available, else the plain layout)."""
    try:
        import yaml
        return {g["name"]: [r.get("alert") or r.get("record") for r in g["rules"]]
                for g in yaml.safe_load(open(path))["groups"]}
    except ImportError:
        groups, cur = {}, None
        for line in open(path):
            m = re.match(r"^\s*- name:\s*(\S+)", line)
            if m:
                cur = groups.setdefault(m.group(1), [])
            m = re.match(r"^\s*- (?:alert|record):\s*(\S+)", line)
            if m:
                cur.append(m.group(1))
        return groups


def check_selectors(base, exprs, where):
    """Every selector of every expression selects live series (metrics in ABSENT excepted)."""
    checked, skipped = set(), set()
    for e in exprs:
        for sel in selectors(e):
            if sel in checked:
                continue
            name = sel.split("{")[0]
            if base_names({name}) & set(ABSENT):
                skipped.add(name)
                continue
            r = query(base, f"count({sel})")
            if not r:
                fail(f"{where}: the selector {sel} matches no live series (in {e!r})")
            checked.add(sel)
    return checked, skipped


def cmd_rules(base, alerts_yml):
    want = alert_rules_file(alerts_yml)

    def evaluated():
        groups = get(base, "/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules and all(r["health"] != "unknown" for r in rules) and groups

    groups = wait("every rule evaluated once", 10, evaluated)
    got = {g["name"]: [r["name"] for r in g["rules"]] for g in groups}
    if got != want:
        fail(f"/api/v1/rules: loaded {got}, {alerts_yml} has {want}")
    bad = [f"{r['name']}: {r['health']} {r.get('lastError', '')}" for g in groups for r in g["rules"] if r["health"] != "ok"]
    if bad:
        fail("rules not healthy: " + "; ".join(bad))
    n = sum(len(v) for v in want.values())
    print(f"/api/v1/rules: {len(got)} group(s) from {alerts_yml}, all {n} rules loaded and evaluated with health ok")


def cmd_alerts(base):
    groups = get(base, "/api/v1/rules", type="alert")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    exprs = []
    for r in rules:
        query(base, r["query"])
        exprs.append(r["query"])
    checked, skipped = check_selectors(base, exprs, "alert rules")
    print(f"all {len(rules)} alert expressions evaluate with status success; their {len(checked)} selectors "
          f"(`up{{job=~\"starling.*\"}}`, `starling_build_info{{role=\"router\"}}`, ...) match live series"
          + (f" (not exported here: {', '.join(sorted(skipped))})" if skipped else ""))


def cmd_quiet(base):
    """No alert is pending or firing: the cluster is healthy. Routing latency depends on the
    machine's load (a debug build on a busy host), so it may be pending without failing the check."""
    active = get(base, "/api/v1/alerts")["data"]["alerts"]
    noisy = [a for a in active if a["labels"].get("alertname") != "StarlingRoutingLatencyHigh"]
    if noisy:
        fail("alerts active on a healthy cluster: " + "; ".join(
            f"{a['labels'].get('alertname')} {a['state']} {a['labels']}" for a in noisy))
    note = " (StarlingRoutingLatencyHigh pending: a slow host)" if active else ""
    print(f"no alert pending or firing on the healthy cluster with a serve node beside it{note}")


def dashboard_queries(path):
    doc = json.load(open(path))
    flat = []
    for p in doc["panels"]:
        flat.append(p)
        flat.extend(p.get("panels", []))
    out = []
    for p in flat:
        for t in p.get("targets", []):
            if t.get("expr"):
                out.append((f"panel {p.get('id')} ({p.get('title')}) {t.get('refId', 'A')}", t["expr"]))
    variables = []
    for v in doc.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        if v.get("type") == "query" and q:
            variables.append((v["name"], q))
    return out, variables


def cmd_dashboard(base, path):
    panels, variables = dashboard_queries(path)
    exprs, empty_ok = [], []
    for where, expr in panels:
        q = subst_grafana(expr)
        r = query(base, q)
        names = base_names(METRIC_RE.findall(q))
        if names <= set(ABSENT):
            empty_ok.append(where)
            continue
        if not r:
            fail(f"{where}: {q!r} returned no series")
        if not any(math.isfinite(float(s["value"][1])) for s in r):
            fail(f"{where}: {q!r} returned only NaN/Inf: {r}")
        exprs.append(q)
    checked, _ = check_selectors(base, exprs, "dashboard")
    for name, q in variables:
        m = re.fullmatch(r"\s*label_values\((?:(.*),\s*)?(\w+)\)\s*", q)
        if not m:
            fail(f"variable {name}: unsupported query {q!r}")
        sel, label = subst_grafana(m.group(1) or ""), m.group(2)
        vals = get(base, f"/api/v1/label/{label}/values", **({"match[]": sel} if sel else {}))["data"]
        if not vals:
            fail(f"variable {name}: {q!r} has no values")
    print(f"all {len(panels)} panel queries evaluate with status success, {len(panels) - len(empty_ok)} with finite "
          f"live values ({len(checked)} selectors match live series), {len(variables)} variables have values"
          + (f"; empty (only metrics absent here, below): {', '.join(empty_ok)}" if empty_ok else ""))


def cmd_metrics(base, alerts_yml, dashboard_json, metrics_md):
    doc = set(re.findall(r"^\| `(starling_[a-z_]+)`", open(metrics_md).read(), re.M))
    used = base_names(METRIC_RE.findall(open(alerts_yml).read()))
    panels, variables = dashboard_queries(dashboard_json)
    for _, e in panels + variables:
        used |= base_names(METRIC_RE.findall(e))
    names = sorted(doc | used)
    live = set(get(base, "/api/v1/label/__name__/values")["data"])
    missing, absent, now_present = [], [], []
    for n in names:
        present = n in live or {f"{n}_bucket", f"{n}_count"} <= live
        if n in ABSENT:
            (now_present if present else absent).append(n)
        elif not present:
            missing.append(n)
    if missing:
        fail(f"metrics named by the alerts, the dashboard or docs/metrics.md without a live series: {missing}")
    print(f"{len(names) - len(absent)} of {len(names)} metrics named by the alerts, the dashboard and metrics.md have "
          f"live series; absent: " + ("; ".join(f"{n} ({ABSENT[n]})" for n in absent) or "none")
          + (f"; listed as absent but now exported (drop them from ABSENT): {now_present}" if now_present else ""))


def cmd_moved(base):
    """Counters moved while Prometheus watched the traffic."""
    moved = {}
    for name in ("starling_connections_accepted_total", "starling_auth_total", "starling_stanzas_in_total",
                 "starling_stanzas_out_total", "starling_stanza_errors_total", "starling_routing_latency_seconds_count",
                 "starling_offline_messages_stored_total", "starling_offline_messages_delivered_total"):
        r = query(base, f"sum(increase({name}[1m]))")
        v = float(r[0]["value"][1]) if r else 0.0
        if not v > 0:
            fail(f"{name} did not increase under the traffic (increase over 1m: {v})")
        moved[name.replace("starling_", "")] = v
    for expr, want in (('sum(starling_sessions)', 2), ('sum(starling_connections{listener="c2s"})', 2),
                       ('sum(starling_auth_total{result="failed"})', 2), ('sum(starling_redis_up and on (instance) starling_build_info{role="router"})', 2)):
        r = query(base, expr)
        if not r or float(r[0]["value"][1]) < want:
            fail(f"{expr} = {r[0]['value'][1] if r else 'none'}, expected at least {want}")
    print("counters moved under the traffic: " + ", ".join(f"{k} +{v:.0f}" for k, v in moved.items())
          + "; 2 sessions and 2 connections open, 2 routers on Redis")


if __name__ == "__main__":
    cmd, args = sys.argv[1].replace("-", "_"), sys.argv[2:]
    globals()[f"cmd_{cmd}"](*args)
PYEOF

py() { "$PYTHON" "$PY" "$@"; }

# --- the cluster --------------------------------------------------------------------------------

read -r REDIS_PORT R1_PORT R2_PORT PROM_PORT <<<"$(py free-ports 4)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" \
  >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
py wait-redis "$REDIS_PORT"

SEEDS="[\"127.0.0.1:$R1_PORT\",\"127.0.0.1:$R2_PORT\"]"
REDIS_URLS="[\"redis://127.0.0.1:$REDIS_PORT/0\"]"
# start NAME ROLE VAR=VALUE...: a node with only our STARLING_* settings (none from the caller's
# environment, STARLING_BIN included, which the server would refuse as an unknown key).
start() {
  local name="$1" role="$2"
  shift 2
  mkdir -p "$WORK/$name"
  (
    for v in $(compgen -e | grep '^STARLING_' || true); do unset "$v"; done
    export RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 STARLING_DATA_DIR="$WORK/$name" STARLING_HTTP__LISTEN=127.0.0.1:0 \
      STARLING_LOG__LEVEL=warn STARLING_COMPONENTS__LISTEN=127.0.0.1:0 "$@"
    exec "$BIN" "$role" >"$WORK/$name.out" 2>"$WORK/$name.err"
  ) &
  PIDS+=($!)
}
cluster_env=(STARLING_STORE__BACKEND=redis "STARLING_STORE__REDIS_URLS=$REDIS_URLS" "STARLING_CLUSTER__SEEDS=$SEEDS")
start router1 router "${cluster_env[@]}" STARLING_CLUSTER__NODE_ID=1 STARLING_CLUSTER__BOOTSTRAP=true \
  "STARLING_CLUSTER__LISTEN=127.0.0.1:$R1_PORT"
start router2 router "${cluster_env[@]}" STARLING_CLUSTER__NODE_ID=2 "STARLING_CLUSTER__LISTEN=127.0.0.1:$R2_PORT"
start edge1 edge "${cluster_env[@]}" STARLING_CLUSTER__NODE_ID=11 STARLING_C2S__LISTEN=127.0.0.1:0 \
  STARLING_C2S__DIRECT_TLS_LISTEN= STARLING_C2S__STARTTLS_REQUIRED=false STARLING_C2S__ALLOW_PLAINTEXT_AUTH=true
start serve serve STARLING_C2S__LISTEN=127.0.0.1:0 STARLING_C2S__DIRECT_TLS_LISTEN=127.0.0.1:0

# Every node announces its listeners on stdout ("starling: http listening on ADDR").
announced() { sed -n "s/^starling: $2 listening on //p" "$WORK/$1.out" 2>/dev/null | head -n1; }
declare -A HTTP
for _ in $(seq 1 150); do
  all=1
  for n in router1 router2 edge1 serve; do
    [ -n "$(announced "$n" http)" ] || all=0
  done
  [ "$all" = 1 ] && [ -n "$(announced edge1 c2s)" ] && break
  for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || die "a node exited at start"; done
  sleep 0.1
done
for n in router1 router2 edge1 serve; do
  HTTP[$n]="$(announced "$n" http)"
  [ -n "${HTTP[$n]}" ] || die "$n announced no http listener within 15 s"
done
EDGE_C2S="$(announced edge1 c2s)"
[ -n "$EDGE_C2S" ] || die "edge1 announced no c2s listener within 15 s"
result="$(py wait-cluster "$BIN" "127.0.0.1:$R1_PORT" 2 1)" || exit 1
py wait-ready "${HTTP[@]}"
ok "live cluster on loopback: redis-server, 2 routers, 1 edge and a serve node; $result; /readyz 200 on all 4"

# Two accounts whose slots are on different routers, so messages cross edge -> router -> router -> edge.
starling_cli() {
  (
    for v in $(compgen -e | grep '^STARLING_' || true); do unset "$v"; done
    export RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 STARLING_DATA_DIR="$WORK/cli" "${cluster_env[@]}"
    timeout 10 "$BIN" "$@"
  )
}
declare -A OWNER_USER
for u in alice bob carol dave erin frank grace heidi ivan judy mallory oscar; do
  owner="$(starling_cli cluster --addr "127.0.0.1:$R1_PORT" locate "$u@localhost" | sed -n 's/.* router \([0-9]*\) .*/\1/p')"
  [ -n "$owner" ] && [ -z "${OWNER_USER[$owner]:-}" ] && OWNER_USER[$owner]="$u"
  [ -n "${OWNER_USER[1]:-}" ] && [ -n "${OWNER_USER[2]:-}" ] && break
done
[ -n "${OWNER_USER[1]:-}" ] && [ -n "${OWNER_USER[2]:-}" ] || die "no candidate account lands on each router"
A="${OWNER_USER[1]}" B="${OWNER_USER[2]}"
echo "${A}pw" | starling_cli user add "$A@localhost" >/dev/null
echo "${B}pw" | starling_cli user add "$B@localhost" >/dev/null

# --- Prometheus ---------------------------------------------------------------------------------

PROM="http://127.0.0.1:$PROM_PORT"
cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $ROOT/deploy/prometheus/alerts.yml
scrape_configs:
  - job_name: starling
    static_configs:
      - targets: ["${HTTP[router1]}", "${HTTP[router2]}", "${HTTP[edge1]}"]
  - job_name: starling-serve
    static_configs:
      - targets: ["${HTTP[serve]}"]
EOF
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
result="$(py wait-prometheus "$PROM" 4)" || exit 1
ok "$(prometheus --version 2>&1 | head -n1): $result"

# --- traffic while Prometheus watches --------------------------------------------------------------

# Python itself in the background (not through `py`), so that $! is its pid and the cleanup's
# kill reaches it: a subshell's pid would leave it waiting out its own 60 s bound.
"$PYTHON" "$PY" traffic "$EDGE_C2S" "$PROM" "$A" "${A}pw" "$B" "${B}pw" "$WORK/stop-traffic" >"$WORK/traffic.out" 2>&1 &
TRAFFIC_PID=$!
PIDS+=("$TRAFFIC_PID")
for _ in $(seq 1 150); do
  grep -q "traffic done" "$WORK/traffic.out" && break
  kill -0 "$TRAFFIC_PID" 2>/dev/null || die "the traffic client failed: $(cat "$WORK/traffic.out")"
  sleep 0.1
done
grep -q "traffic done" "$WORK/traffic.out" || die "the traffic client did not finish within 15 s"
py wait-traffic-scraped "$PROM"
ok "traffic on the edge in two rounds (a scrape between): $A (router 1) and $B (router 2) log in with PLAIN, presence, 8 messages across routers, one offline message delivered at login, 3 stanza errors, 2 failed logins"

# --- the checks ---------------------------------------------------------------------------------

result="$(py rules "$PROM" deploy/prometheus/alerts.yml)" || exit 1
ok "$result"
result="$(py alerts "$PROM")" || exit 1
ok "$result"
result="$(py dashboard "$PROM" deploy/grafana/starling.json)" || exit 1
ok "deploy/grafana/starling.json on live data: $result"
result="$(py metrics "$PROM" deploy/prometheus/alerts.yml deploy/grafana/starling.json docs/metrics.md)" || exit 1
ok "$result"
result="$(py moved "$PROM")" || exit 1
ok "$result"
result="$(py quiet "$PROM")" || exit 1
ok "$result"
touch "$WORK/stop-traffic"
ok "real Prometheus on a live cluster: done in $((SECONDS - START)) s"
