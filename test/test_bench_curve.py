"""bench/curve.py (issue 15, point 4) end to end on a stack of its own (ports offset by 14000,
gateway 9975): a short run at two connection counts must give one row per run with figures that
agree with themselves (a rate and latencies from real checkouts, every answer 2xx), an audit that
is clean, and the PNG and Markdown table it promises. The figures themselves are not judged here:
they are measurements (docs/BENCHMARKS.md), never test assertions.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, shoplog_bin

ENV = {"SHOPLOG_PORT_OFFSET": "14000", "SHOPLOG_GATEWAY_PORT": "9975"}


def test_the_curve_runs_each_connection_count_and_reports_a_clean_audit(tmp_path: Path):
    out = tmp_path / "curve"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench/curve.py"), "run", str(shoplog_bin()), "--connections", "1,4",
         "--replicas", "1", "--duration", "3s", "--out", str(out)],
        env=dict(os.environ, **ENV), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    with open(out / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["replicas"], r["connections"]) for r in rows] == [("1", "1"), ("1", "4")]
    for r in rows:
        assert int(r["checkouts"]) > 0 and float(r["throughput"]) > 0, r
        assert 0 < float(r["p50_ms"]) <= float(r["p99_ms"]) <= float(r["max_ms"]), r
        assert r["non_2xx"] == "0", r
    summary = json.loads((out / "curve.json").read_text())
    assert summary["audits"]["1"] == {"exit_code": 0, "clean": True, "violations": 0}, summary
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 1 | 4 |" in run.stdout, run.stdout
