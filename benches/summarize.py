"""Medians, spreads and ratios (against Starling) from benches/compare.sh's results.jsonl."""
import json
import statistics
import sys
from collections import defaultdict

rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
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
