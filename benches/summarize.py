"""Medians, spreads and ratios from the benchmark scripts' JSON lines.

- benches/compare.sh's results.jsonl: Starling against Prosody and ejabberd (ratios against Starling).
- benches/cluster.sh's cluster.jsonl: the cluster against `serve` (ratios cluster / serve), with the
  CPU split by role and the recovery after a router kill.
"""
import json
import statistics
import sys
from collections import defaultdict

rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]


def cluster_tables(rows):
    roles = {}  # label -> pid -> role
    for r in rows:
        if r["scenario"] == "pids":
            roles.setdefault(r["label"], {}).update(r["pids"])

    def pick(label, scen, rate=None):
        return [
            r for r in rows
            if r.get("label") == label and r["scenario"] == scen and (rate is None or r.get("offered_rate") == rate)
        ]

    def med(vals):
        vals = [float(v) for v in vals if isinstance(v, (int, float))]
        if not vals:
            return None, ""
        spread = f" ({min(vals):.4g}–{max(vals):.4g})" if len(vals) > 1 else ""
        return statistics.median(vals), spread

    def role_cpu(r, label, prefix):
        """Server CPU µs per delivered message of the processes whose role starts with prefix."""
        per = r.get("server_cpu_s_per_pid") or {}
        secs = sum(v for pid, v in per.items() if roles.get(label, {}).get(pid, "").startswith(prefix))
        return secs * 1e6 / max(1, r.get("delivered", 0))

    def busy(r, key):
        v = r.get(key)
        return v / r["seconds"] if isinstance(v, (int, float)) and r.get("seconds") else None

    def aux_cpu(r):
        return sum((r.get("aux_cpu_s_per_pid") or {}).values()) * 1e6 / max(1, r.get("delivered", 0))

    mesh = [
        ("login", None, lambda r, l: r.get("logins_per_s"), "SCRAM-SHA-1 logins/s", True),
        ("login", None, lambda r, l: r.get("server_cpu_us_per_login"), "server CPU µs per login", False),
        ("messages", 0, lambda r, l: r.get("delivered_per_s"), "delivered msgs/s at saturation", True),
        ("messages", 0, lambda r, l: r.get("server_cpu_us_per_msg"),
         "server CPU µs per delivered msg (saturation)", False),
        ("messages", 0, lambda r, l: role_cpu(r, l, "edge"), "… of which the edges", False),
        ("messages", 0, lambda r, l: role_cpu(r, l, "router"), "… of which the routers", False),
        ("messages", 0, lambda r, l: busy(r, "server_cpu_s"), "server CPU busy at saturation (cores; CPU 0 = 1.0)",
         False),
        ("messages", 0, lambda r, l: busy(r, "generator_cpu_s"), "generator CPU busy at saturation (cores; CPU 1)",
         False),
        ("messages", 0, lambda r, l: r.get("p99_ms"), "p99 latency ms at saturation", False),
        ("messages", 5000, lambda r, l: r.get("p50_ms"), "p50 latency ms at 5,000 msgs/s", False),
        ("messages", 5000, lambda r, l: r.get("p99_ms"), "p99 latency ms at 5,000 msgs/s", False),
        ("messages", 5000, lambda r, l: r.get("max_ms"), "max latency ms at 5,000 msgs/s", False),
        ("messages", 5000, lambda r, l: r.get("server_cpu_us_per_msg"), "server CPU µs per msg at 5,000 msgs/s",
         False),
        ("messages", 5000, lambda r, l: role_cpu(r, l, "edge"), "… of which the edges", False),
        ("messages", 5000, lambda r, l: role_cpu(r, l, "router"), "… of which the routers", False),
        ("messages", 0, lambda r, l: aux_cpu(r), "Redis CPU µs per msg, saturation (not in the sums)", False),
        ("messages", None, lambda r, l: r.get("lost", 0) + r.get("reordered", 0),
         "messages lost + reordered (each run)", False),
        ("idle", None, lambda r, l: r.get("bytes_per_session"), "memory per idle session, all processes (bytes)",
         False),
    ]
    if pick("cluster", "messages") or pick("serve", "messages"):
        layout = [r for r in rows if r["scenario"] == "layout" and r["label"] == "cluster"]
        if layout:
            lay = layout[0]
            print(f"Pairs: {lay['pairs']}, of which {lay['cross_router_pairs']} with sender and receiver homed "
                  f"on different routers ({lay['pairs_by_homes']}); loadgen's sequential numbering would "
                  f"have given {lay['sequential_numbering_cross_fraction']:.0%}.\n")
        print("| measure | cluster (2 routers + 2 edges) | serve | cluster / serve |")
        print("|---|---|---|---|")
        for scen, rate, get, title, higher in mesh:
            cells, meds = [], {}
            for label in ("cluster", "serve"):
                rs = pick(label, scen, rate)
                if title.startswith("…") and label == "serve":
                    cells.append("–")
                    continue
                if title.startswith("messages lost"):
                    vals = [get(r, label) for r in rs]
                    cells.append(", ".join(str(v) for v in vals) if vals else "–")
                    continue
                if title.startswith("Redis") and label == "serve":
                    cells.append("–")
                    continue
                m, spread = med([get(r, label) for r in rs])
                if m is None:
                    cells.append("–")
                    continue
                meds[label] = m
                cells.append(f"{m:.4g}{spread}")
            ratio = "–"
            if "cluster" in meds and "serve" in meds and meds["serve"]:
                ratio = f"{meds['cluster'] / meds['serve']:.2f}"
            print(f"| {title} | " + " | ".join(cells) + f" | {ratio} |")
    kills = {r["label"]: r for r in rows if r["scenario"] == "kill"}
    if kills:
        print()
        print("| case | killed router | kill at s | recovery: longest silence of a pair, s | silence began at s "
              "| pairs silent > 1 s | sent | delivered | lost | lost messages sent between s "
              "| stored offline | duplicates | reordered | errors to senders |")
        print("|---" * 14 + "|")
        for label, k in kills.items():
            ms = [r for r in pick(label, "messages")]
            if not ms:
                continue
            r = ms[0]
            lay = next((x for x in rows if x["scenario"] == "layout" and x["label"] == label), {})
            who = f"{k['killed_router']} ({'leader' if k['killed_router'] == k['leader_before'] else 'follower'})"
            span = "–"
            if r.get("lost_first_sent_ms") is not None:
                span = f"{r['lost_first_sent_ms'] / 1000:.2f}–{r['lost_last_sent_ms'] / 1000:.2f}"
            print(f"| {label} ({lay.get('routers', '?')} routers, {r['offered_rate']} msgs/s, {r['pairs']} pairs) "
                  f"| {who} | {k['kill_at_ms'] / 1000:.2f} | {r['max_gap_ms'] / 1000:.2f} "
                  f"| {r['max_gap_at_ms'] / 1000:.2f} | {r['pairs_gap_over_1s']} | {r['sent']} | {r['delivered']} "
                  f"| {r['lost_seqs']} | {span} | {k['offline_stored_after']} | {r['duplicates']} "
                  f"| {r['reordered']} | {r['errors_to_senders']} |")


if any(r.get("label") in ("cluster", "serve") or r["scenario"] == "kill" for r in rows):
    cluster_tables(rows)
    sys.exit(0)

metrics = [
    ("login", None, "logins_per_s", "SCRAM-SHA-1 logins/s", True),
    ("login", None, "server_cpu_us_per_login", "server CPU µs per login", False),
    ("messages", 0, "delivered_per_s", "delivered msgs/s at saturation", True),
    ("messages", 0, "server_cpu_us_per_msg", "server CPU µs per delivered msg (saturation)", False),
    ("messages", 5000, "p99_ms", "p99 latency ms at 5,000 msgs/s", False),
    ("messages", 5000, "server_cpu_us_per_msg", "server CPU µs per msg at 5,000 msgs/s", False),
    ("idle", None, "bytes_per_session", "memory per idle session (bytes)", False),
]
values = defaultdict(list)
for r in rows:
    rate = r.get("offered_rate")
    for scen, want_rate, key, _, _ in metrics:
        if r["scenario"] == scen and (want_rate is None or rate == want_rate):
            v = r.get(key)
            if isinstance(v, (int, float)) or (isinstance(v, str) and v.replace(".", "", 1).isdigit()):
                values[(r["label"], scen, want_rate, key)].append(float(v))
labels = [l for l in ("starling", "prosody", "ejabberd") if any(k[0] == l for k in values)]
print("| measure | " + " | ".join(labels) + " | " + " | ".join(f"starling vs {l}" for l in labels[1:]) + " |")
print("|---" * (1 + 2 * len(labels) - 1) + "|")
for scen, rate, key, title, higher_better in metrics:
    cells, meds = [], {}
    for l in labels:
        v = values.get((l, scen, rate, key), [])
        if not v:
            cells.append("–")
            continue
        meds[l] = statistics.median(v)
        spread = f" ({min(v):.4g}–{max(v):.4g})" if len(v) > 1 else ""
        cells.append(f"{meds[l]:.4g}{spread}")
    ratios = []
    for l in labels[1:]:
        if "starling" in meds and l in meds and meds["starling"] and meds[l]:
            r = meds["starling"] / meds[l] if higher_better else meds[l] / meds["starling"]
            ratios.append(f"{r:.2f}× {'better' if r >= 1 else 'worse'}")
        else:
            ratios.append("–")
    print(f"| {title} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
