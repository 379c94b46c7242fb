"""Renders a fault-injection report (one row per scenario run) as a Markdown table of
docs/FAULTS.md: target/faults-report.jsonl (`make test-faults`, the native stack) or
target/compose-report.jsonl (`make test-compose`, the containers; these rows also say how long
the killed container took to be healthy again).

    python3 test/faults/report.py [target/faults-report.jsonl | target/compose-report.jsonl]
"""

import json
import sys
from pathlib import Path

path = Path(sys.argv[1] if len(sys.argv) > 1 else "target/faults-report.jsonl")
print("| scenario | killed (at s, down for s) | in flight at kill | checkouts | 2xx | 4xx | 5xx "
      "| storm (s) | quiet after (s) | healthy again after (s) | audit |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for line in path.read_text().splitlines():
    r = json.loads(line)
    killed = "; ".join(f"{name} @{at:.1f} ({down:.1f})" for name, at, down in r["killed"])
    if len(r["killed"]) > 3:
        killed = f"{len(r['killed'])} kills: " + ", ".join(sorted({k[0] for k in r["killed"]}))
    in_flight = ", ".join(map(str, r["in_flight_at_kill"][:3])) + ("…" if len(r["in_flight_at_kill"]) > 3 else "")
    healthy = ", ".join(str(x["healthy_after_s"]) for x in r.get("recoveries", [])) or "—"
    print(f"| {r['scenario']} | {killed} | {in_flight} | {r['checkouts']} | {r['2xx']} | {r['4xx']} "
          f"| {r['5xx']} | {r['storm_s']} | {r['quiet_after_s']} | {healthy} | {'clean' if r['audit_clean'] else 'VIOLATIONS'} |")
