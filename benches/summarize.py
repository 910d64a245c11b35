"""Medians, spreads and ratios from the benchmark scripts' JSON lines.

- benches/compare.sh's results.jsonl: Starling against Prosody and ejabberd (ratios against Starling).
- benches/cluster.sh's cluster.jsonl: the cluster against `serve` (ratios cluster / serve), with the
  CPU split by role and the recovery after a router kill.
- Both: the presence fan-out (`presence` lines), one table per contact count K.
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


def num(v):
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def med_spread(vals):
    vals = [float(v) for v in vals if isinstance(v, (int, float))]
    if not vals:
        return None, ""
    spread = f" ({num(min(vals))}–{num(max(vals))})" if len(vals) > 1 else ""
    return statistics.median(vals), spread


def presence_tables(rows, labels, ratio_of):
    """The presence fan-out: one table per contact count K, columns `labels`, and ratios.

    ratio_of(meds, higher_better) gives the ratio cells from the medians per label."""
    roles = {}
    for r in rows:
        if r["scenario"] == "pids":
            roles.setdefault(r["label"], {}).update(r["pids"])

    def per_delivery(r, prefix):
        per = r.get("server_cpu_s_per_pid") or {}
        secs = sum(v for pid, v in per.items() if roles.get(r["label"], {}).get(pid, "").startswith(prefix))
        return secs * 1e6 / max(1, r.get("received", 0))

    def busy(r, key):
        v = r.get(key)
        return v / r["measure_s"] if isinstance(v, (int, float)) and r.get("measure_s") else None

    ms = lambda key: lambda r: r[key] / 1000 if isinstance(r.get(key), (int, float)) else None
    metrics = [
        ("presence deliveries/s (per run: median of its rounds)", lambda r: r.get("deliveries_per_s"), True),
        ("server CPU µs per delivery", lambda r: r.get("server_cpu_us_per_delivery"), False),
        ("… of which the edges", lambda r: per_delivery(r, "edge"), False),
        ("… of which the routers", lambda r: per_delivery(r, "router"), False),
        ("Redis CPU µs per delivery (not in the sums)",
         lambda r: sum((r.get("aux_cpu_s_per_pid") or {}).values()) * 1e6 / max(1, r.get("received", 0)), False),
        ("server CPU busy while measuring (cores)", lambda r: busy(r, "server_cpu_s"), False),
        ("generator CPU busy while measuring (cores)", lambda r: busy(r, "generator_cpu_s"), False),
        ("delivery latency p50 ms", ms("p50_us"), False),
        ("delivery latency p99 ms", ms("p99_us"), False),
        ("delivery latency max ms", ms("max_us"), False),
        ("time for all contacts to hear a change, p50 ms", ms("all_heard_p50_us"), False),
        ("time for all contacts to hear a change, p99 ms", ms("all_heard_p99_us"), False),
        ("login of all users, s", lambda r: r.get("login_s"), False),
    ]
    ks = sorted({r["contacts"] for r in rows if r["scenario"] == "presence" and r.get("label") in labels})
    for k in ks:
        pres = {l: [r for r in rows if r["scenario"] == "presence" and r.get("label") == l and r["contacts"] == k]
                for l in labels}
        setups = {l: [r for r in rows if r["scenario"] == "presence-setup" and r.get("label") == l
                      and r["contacts"] == k] for l in labels}
        users = sorted({r["users"] for l in labels for r in pres[l]})
        rounds = sorted({r["rounds"] for l in labels for r in pres[l]})
        nruns = {l: len(pres[l]) for l in labels}
        print(f"\nPresence fan-out, K={k} contacts, U={'/'.join(map(str, users))} users, "
              f"{'/'.join(map(str, rounds))} rounds per run, runs: "
              + ", ".join(f"{l} {n}" for l, n in nruns.items()) + "\n")
        present = [l for l in labels if pres[l]]
        ratio_heads = ratio_of(None, True)
        print("| measure | " + " | ".join(present) + (" | " + " | ".join(ratio_heads) if ratio_heads else "") + " |")
        print("|---" * (1 + len(present) + len(ratio_heads)) + "|")
        for title, get, higher in metrics:
            cells, meds = [], {}
            for l in present:
                m, spread = med_spread([get(r) for r in pres[l]])
                if m is None or (title.startswith(("…", "Redis")) and not any(
                        roles.get(l, {}).get(p, "").startswith(("edge", "router")) for p in roles.get(l, {}))):
                    cells.append("–")
                    continue
                meds[l] = m
                cells.append(f"{num(m)}{spread}")
            if not meds:
                continue
            rc = ratio_of(meds, higher) if not title.startswith(("…", "Redis", "generator")) else ["–"] * len(
                ratio_heads)
            print(f"| {title} | " + " | ".join(cells) + (" | " + " | ".join(rc) if ratio_heads else "") + " |")
        lost = [", ".join(f"{r['lost']}/{r['expected']}" for r in pres[l]) or "–" for l in present]
        print("| deliveries lost / expected (each run) | " + " | ".join(lost)
              + (" | " + " | ".join("–" for _ in ratio_heads) if ratio_heads else "") + " |")
        odd = [", ".join(f"{r['duplicates']}/{r['strangers']}/{r['failed_sessions']}" for r in pres[l]) or "–"
               for l in present]
        print("| duplicates / strangers / failed sessions (each run) | " + " | ".join(odd)
              + (" | " + " | ".join("–" for _ in ratio_heads) if ratio_heads else "") + " |")
        init = [", ".join(f"{r['initial_complete_users']}/{r['users']} in {r['initial_wait_s']:.1f} s"
                          for r in pres[l]) or "–" for l in present]
        print("| users that heard all initial presences | " + " | ".join(init)
              + (" | " + " | ".join("–" for _ in ratio_heads) if ratio_heads else "") + " |")
        st = []
        for l in present:
            s = setups[l]
            st.append(", ".join(f"{r['setup_s']:.0f} s ({r['items_already_both']} items already both; "
                                f"sample {r['verified_users']} verified {'ok' if r['verified_ok'] else 'NOT ok'})"
                                for r in s) or "–")
        print("| roster setup (not measured: informational) | " + " | ".join(st)
              + (" | " + " | ".join("–" for _ in ratio_heads) if ratio_heads else "") + " |")
        for lay in (r for r in rows if r["scenario"] == "presence-layout" and r["contacts"] == k):
            print(f"\nLayout: {lay['cross_router_fraction']:.0%} of the ring's contact pairs are homed on "
                  f"different routers, {lay['cross_edge_fraction']:.0%} log in on different edges "
                  f"(users by router: {lay['users_by_router']}).")


def cluster_ratio(meds, higher):
    if meds is None:
        return ["cluster / serve"]
    if meds.get("serve") and "cluster" in meds:
        return [f"{meds['cluster'] / meds['serve']:.2f}"]
    return ["–"]


def compare_ratio(meds, higher):
    others = ("prosody", "ejabberd")
    if meds is None:
        return [f"starling vs {o}" for o in others]
    out = []
    for o in others:
        if meds.get("starling") and meds.get(o):
            r = meds["starling"] / meds[o] if higher else meds[o] / meds["starling"]
            out.append(f"{r:.2f}× {'better' if r >= 1 else 'worse'}")
        else:
            out.append("–")
    return out


if any(r.get("label") in ("cluster", "serve") or r["scenario"] == "kill" for r in rows):
    cluster_tables(rows)
    presence_tables(rows, ["cluster", "serve"], cluster_ratio)
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


def basic_table(values):
    labels = [l for l in ("starling", "prosody", "ejabberd", "floor") if any(k[0] == l for k in values)]
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
    login_cpu = {l: statistics.median(v) for (l, scen, _, key), v in values.items()
                 if scen == "login" and key == "server_cpu_us_per_login" and v}
    if "floor" in login_cpu and login_cpu["floor"]:
        print()
        print(f"The login floor costs {login_cpu['floor']:.4g} µs per login: no server doing this exchange on "
              "this machine and runtime goes below it.")
        if "starling" in login_cpu:
            print(f"Starling's own work per login, above the floor: {login_cpu['starling'] - login_cpu['floor']:.3g} µs.")
        for l in ("ejabberd", "prosody"):
            if l in login_cpu:
                print(f"The most a server on this runtime can be ahead of {l} on CPU per login here: "
                      f"{login_cpu[l] / login_cpu['floor']:.2f}×.")


if values:
    basic_table(values)
if any(r["scenario"] == "presence" for r in rows):
    presence_tables(rows, [l for l in ("starling", "prosody", "ejabberd") if any(
        r.get("label") == l and r["scenario"] == "presence" for r in rows)], compare_ratio)
