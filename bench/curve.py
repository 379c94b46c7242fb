#!/usr/bin/env python3
"""Throughput and latency against the number of connections (issue 15, point 4).

    bench/curve.py run SHOPLOG [--connections 1,8,64,256,1024] [--replicas 1,2] [--duration 20s]
                               [--out DIR]
    bench/curve.py plot DIR/curve.csv [DIR/curve.png]

`run` starts one fresh stack per replica count (`shoplog up --detach --replicas R`, ports from
SHOPLOG_PORT_OFFSET / SHOPLOG_GATEWAY_PORT, default 5500 / 9550, a temporary data directory),
runs `shoplog bench -c C --duration D --no-audit --no-cost --json` for each connection count in
turn on it, then audits the stack once (`shoplog audit --json`: every run's checkouts must
reconcile) and stops it. It writes DIR/curve.csv (one row per run), DIR/curve.json (the same plus
each stack's audit), DIR/curve.png, and prints a Markdown table. Every checkout goes through the
gateway, as a client's would; the load generator runs on the same machine and is part of what
the cores are shared between.

Needs matplotlib for the plot (bench/requirements.txt).
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

FIELDS = ["replicas", "connections", "throughput", "p50_ms", "p90_ms", "p99_ms", "max_ms",
          "checkouts", "non_2xx"]


def sh(cmd, env, check=True):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if check and out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return out


def run(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    conns = [int(c) for c in args.connections.split(",")]
    replicas = [int(r) for r in args.replicas.split(",")]
    rows, audits = [], {}
    for r in replicas:
        data = tempfile.mkdtemp(prefix="shoplog-curve-")
        env = dict(os.environ, SHOPLOG_DATA_DIR=data,
                   SHOPLOG_PORT_OFFSET=os.environ.get("SHOPLOG_PORT_OFFSET", "5500"),
                   SHOPLOG_GATEWAY_PORT=os.environ.get("SHOPLOG_GATEWAY_PORT", "9550"))
        try:
            sh([args.shoplog, "up", "--detach", "--replicas", str(r)], env)
            for c in conns:
                b = json.loads(sh([args.shoplog, "bench", "-c", str(c), "--duration", args.duration,
                                   "--no-audit", "--no-cost", "--json"], env, check=False).stdout or "{}")
                if "throughput" not in b:
                    sys.exit(f"bench at {c} connections, {r} replicas gave no result")
                row = {"replicas": r, "connections": c, "non_2xx": b["status_4xx"] + b["status_5xx"],
                       **{k: b[k] for k in FIELDS if k in b}}
                rows.append(row)
                print(f"replicas {r} connections {c:5}: {row['throughput']:8.0f}/s  "
                      f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  non-2xx {row['non_2xx']}",
                      file=sys.stderr)
            audit = sh([args.shoplog, "audit", "--json"], env, check=False)
            audits[r] = json.loads(audit.stdout) if audit.stdout.strip() else {"error": audit.stderr[-2000:]}
            audits[r]["exit_code"] = audit.returncode
        finally:
            sh([args.shoplog, "down", "--wipe"], env, check=False)
    with open(out / "curve.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    summary = {"duration": args.duration, "runs": rows,
               "audits": {r: {"exit_code": a.get("exit_code"), "clean": a.get("exit_code") == 0,
                              "violations": len(a.get("violations", []) or [])}
                          for r, a in audits.items()}}
    (out / "curve.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(out / "curve.csv", out / "curve.png")
    print(table(rows))
    bad = [r for r, a in audits.items() if a.get("exit_code") != 0]
    if bad:
        sys.exit(f"audit not clean after the runs with {bad} replicas: see {out / 'curve.json'}")


def table(rows) -> str:
    lines = ["| replicas | connections | checkouts/s | p50 | p90 | p99 | max | non-2xx |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['replicas']} | {r['connections']:,} | {r['throughput']:,.0f} | {r['p50_ms']:.1f} ms "
                     f"| {r['p90_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['max_ms']:.1f} ms | {r['non_2xx']} |")
    return "\n".join(lines)


def plot(csv_path: Path, png: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with open(csv_path) as f:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, rep in enumerate(sorted({r["replicas"] for r in rows})):
        rs = sorted((r for r in rows if r["replicas"] == rep), key=lambda r: r["connections"])
        x = [r["connections"] for r in rs]
        colour = f"C{i}"
        ax1.plot(x, [r["throughput"] for r in rs], marker="o", color=colour, label=f"{rep:.0f} replica(s)")
        ax2.plot(x, [r["p50_ms"] for r in rs], marker="o", color=colour, label=f"p50, {rep:.0f} replica(s)")
        ax2.plot(x, [r["p99_ms"] for r in rs], marker="s", linestyle="--", color=colour,
                 label=f"p99, {rep:.0f} replica(s)")
    ticks = sorted({r["connections"] for r in rows})
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [f"{t:,.0f}" for t in ticks])
        ax.set_xlabel("concurrent connections")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_ylabel("checkouts / s")
    ax1.set_ylim(bottom=0)
    ax2.set_yscale("log")
    ax2.set_ylabel("latency (ms)")
    fig.suptitle("Checkouts through the gateway against connections (shoplog bench)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("shoplog")
    r.add_argument("--connections", default="1,8,64,256,1024")
    r.add_argument("--replicas", default="1,2")
    r.add_argument("--duration", default="20s")
    r.add_argument("--out", default="target/curve")
    pl = sub.add_parser("plot")
    pl.add_argument("csv")
    pl.add_argument("png", nargs="?")
    a = p.parse_args()
    if a.cmd == "run":
        run(a)
    else:
        plot(Path(a.csv), Path(a.png) if a.png else Path(a.csv).with_suffix(".png"))


if __name__ == "__main__":
    main()
