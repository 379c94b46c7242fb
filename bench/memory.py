#!/usr/bin/env python3
"""Redis memory over a long checkout run: does archiving keep it bounded? (issue 14, point 5)

    bench/memory.py run SHOPLOG [--orders N] [--every 10] [--retain 60s] [--out DIR] [--keep] [--no-checks]
    bench/memory.py plot DIR/memory.csv [DIR/memory.png]
    bench/memory.py compare SHOPLOG [--rounds 3] [--duration 60s] [--retain 10s] [--reports FILE]

`run` starts a fresh stack of its own (SHOPLOG_PORT_OFFSET / SHOPLOG_GATEWAY_PORT from the
environment, default 5500 / 9550) with LOG_RETAIN=--retain, runs `shoplog bench --orders N
--no-audit`, and samples every database's `used_memory` (INFO memory) and the archive's bytes on
disk, how far archiving lags and how many sagas wait to be retired (`shoplog archive --json`),
every --every seconds into DIR/memory.csv, until the run is over and the archive has caught
up (one more retention); then it audits under `/usr/bin/time -v` (wall time, peak RSS), runs
`replay <service> --diff` for each service, plots DIR/memory.png, writes DIR/summary.json and
prints a Markdown table (one row a minute), and stops the stack (--keep: leave it up);
--no-checks skips the audit and the replays. Without
archiving (`--retain off`) the same run shows the growth it prevents.

`compare` measures what archiving costs the checkouts: fresh stacks with LOG_RETAIN=--retain and
with archiving off, alternating (which goes first alternates too), `shoplog bench --duration`
on each; prints each run's throughput, the medians and the ratio on/off, and where archiving's
cost lands: each component's CPU ms per checkout on and off (medians of the runs' cost reports).
--reports FILE keeps every run's whole `bench --json` report (Redis commands per database too).
The default retention is short (10 s) so that archiving runs for most of each run.

Needs matplotlib for the plot (bench/requirements.txt).
"""
import argparse
import csv
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DB_PORTS = {"order-db": 6401, "stock-db": 6402, "payment-db": 6403}


def used_memory(port: int) -> int:
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "memory"], capture_output=True, text=True,
                         timeout=10).stdout
    for line in out.splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":")[1])
    return -1


def archive_status(shoplog: str, env: dict) -> tuple:
    """How far archiving is behind its retention (s) and how many sagas wait to be retired, from
    `shoplog archive --json`; empty cells when the stack does not answer."""
    done = subprocess.run([shoplog, "archive", "--json"], env=env, capture_output=True, text=True, timeout=60)
    try:
        status = json.loads(done.stdout)
    except json.JSONDecodeError:
        return "", ""
    lag = status.get("lag_ms")
    return (round(lag / 1000, 1) if lag is not None else ""), status.get("retire_queue", "")


def dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) if d.exists() else 0


def run(args):
    out = Path(args.out or tempfile.mkdtemp(prefix="shoplog-memory-"))
    out.mkdir(parents=True, exist_ok=True)
    offset = int(os.environ.get("SHOPLOG_PORT_OFFSET", "5500"))
    gateway = os.environ.get("SHOPLOG_GATEWAY_PORT", "9550")
    data = out / "data"
    env = dict(os.environ, SHOPLOG_DATA_DIR=str(data), SHOPLOG_PORT_OFFSET=str(offset),
               SHOPLOG_GATEWAY_PORT=gateway, LOG_RETAIN=args.retain)
    sh = lambda *a, **kw: subprocess.run([args.shoplog, *a], env=env, **kw)  # noqa: E731
    up = sh("up", "--detach", capture_output=True, text=True)
    if up.returncode != 0:
        sys.exit(f"shoplog up failed:\n{up.stderr}")
    csv_path = out / "memory.csv"
    # Stopped (SIGTERM, ^C), it stops its load generator too: left running, it would go on
    # checking out against whatever stack is next on these ports.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bench = None
    try:
        bench = subprocess.Popen([args.shoplog, "bench", "--orders", str(args.orders), "--no-audit", "--json",
                                  "--concurrency", str(args.concurrency)], env=env,
                                 stdout=open(out / "bench.json", "w"), stderr=subprocess.DEVNULL)
        started = time.monotonic()
        tail = None  # when the bench ended, plus one retention and two samples
        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["seconds", *DB_PORTS, "archive", "lag_s", "retire_queue"])
            while True:
                row = [round(time.monotonic() - started, 1)]
                row += [used_memory(p + offset) for p in DB_PORTS.values()]
                row.append(dir_bytes(data / "archive"))
                row += archive_status(args.shoplog, env) if args.retain != "off" else ["", ""]
                w.writerow(row)
                f.flush()
                print(" ".join(str(x) for x in row), file=sys.stderr)
                if tail is None and bench.poll() is not None:
                    retain = 0 if args.retain == "off" else parse_seconds(args.retain)
                    tail = time.monotonic() + retain + 2 * args.every + 10
                if tail is not None and time.monotonic() > tail:
                    break
                time.sleep(args.every)
        summary = {"orders": args.orders, "retain": args.retain,
                   "bench": json.loads((out / "bench.json").read_text() or "null")}
        if args.no_checks:
            (out / "summary.json").write_text(json.dumps(summary, indent=2))
            print(table(csv_path))
            return
        summary["audit"] = timed_audit(args.shoplog, env)
        summary["replay_diff"] = {}
        for service in ("order", "stock", "payment"):
            diff = sh("replay", service, "--diff", capture_output=True, text=True)
            summary["replay_diff"][service] = {"exit": diff.returncode,
                                               "last_line": (diff.stdout.strip().splitlines() or [""])[-1]}
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps({k: summary[k] for k in ("audit", "replay_diff")}, indent=2))
        print(table(csv_path))
        plot(csv_path, out / "memory.png", title=f"{args.orders} checkouts, LOG_RETAIN={args.retain}")
        print(out / "memory.png")
    finally:
        if bench is not None and bench.poll() is None:
            bench.terminate()
            bench.wait()
        if not args.keep:
            sh("down", "--wipe", capture_output=True)


def timed_audit(shoplog: str, env: dict) -> dict:
    """`shoplog audit --json` under `/usr/bin/time -v`: its verdict, wall time and peak RSS."""
    done = subprocess.run(["/usr/bin/time", "-v", shoplog, "audit", "--json"], env=env,
                          capture_output=True, text=True)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", done.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    user = re.search(r"User time \(seconds\): ([\d.]+)", done.stderr)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        report = {}
    seconds = None
    if wall:
        h, m, sec = wall.groups()
        seconds = int(h or 0) * 3600 + int(m) * 60 + float(sec)
    return {"exit": done.returncode, "violations": len(report.get("violations", [])) if report else None,
            "wall_s": seconds, "user_s": float(user.group(1)) if user else None,
            "peak_rss_mb": round(int(rss.group(1)) / 1024) if rss else None}


def table(csv_path: Path, every: float = 60) -> str:
    """The samples as a Markdown table, one row per `every` seconds (MiB)."""
    rows = list(csv.DictReader(open(csv_path)))
    out = ["| s | " + " | ".join(DB_PORTS) + " | archive on disk | archive lag (s) | sagas to retire |",
           "|---" * (len(DB_PORTS) + 4) + "|"]
    next_at = 0.0
    for r in rows:
        if float(r["seconds"]) + 0.5 >= next_at or r is rows[-1]:
            cells = [f"{int(r[n]) / 2**20:.1f}" for n in (*DB_PORTS, "archive")]
            cells += [r.get("lag_s") or "", r.get("retire_queue") or ""]
            out.append(f"| {float(r['seconds']):.0f} | " + " | ".join(cells) + " |")
            next_at = float(r["seconds"]) + every
    return "\n".join(out)


def compare(args):
    """Throughput with archiving on and off, fresh stacks alternating."""
    offset = os.environ.get("SHOPLOG_PORT_OFFSET", "5500")
    gateway = os.environ.get("SHOPLOG_GATEWAY_PORT", "9550")
    runs = {"on": [], "off": []}
    costs = {"on": [], "off": []}
    reports = {"on": [], "off": []}
    for i in range(args.rounds):
        for mode in (("on", "off") if i % 2 == 0 else ("off", "on")):
            data = tempfile.mkdtemp(prefix="shoplog-archcmp-")
            env = dict(os.environ, SHOPLOG_DATA_DIR=data, SHOPLOG_PORT_OFFSET=offset,
                       SHOPLOG_GATEWAY_PORT=gateway, LOG_RETAIN=args.retain if mode == "on" else "off")
            try:
                up = subprocess.run([args.shoplog, "up", "--detach"], env=env, capture_output=True, text=True)
                if up.returncode != 0:
                    sys.exit(f"shoplog up failed:\n{up.stderr}")
                bench = subprocess.run([args.shoplog, "bench", "--duration", args.duration, "--no-audit",
                                        "--json", "-c", str(args.concurrency)],
                                       env=env, capture_output=True, text=True)
                if bench.returncode != 0:
                    sys.exit(f"bench failed ({bench.returncode}): {bench.stderr[-2000:]}")
                report = json.loads(bench.stdout)
                rate = report["throughput"]
                reports[mode].append(report)
                if report.get("cost"):
                    costs[mode].append({c["component"]: c["cpu_s_per_1k"] for c in report["cost"]["components"]}
                                        | {"total": report["cost"]["total_cpu_s_per_1k"]})
                archived = subprocess.run([args.shoplog, "archive", "--json"], env=env, capture_output=True,
                                          text=True)
                segs = json.loads(archived.stdout)["segments"] if archived.returncode == 0 else None
                runs[mode].append(rate)
                print(f"round {i + 1} archiving {mode:3}: {rate:8.1f} checkouts/s  (archive segments: {segs})",
                      file=sys.stderr)
            finally:
                subprocess.run([args.shoplog, "down", "--wipe"], env=env, capture_output=True)
    on, off = statistics.median(runs["on"]), statistics.median(runs["off"])
    # Where archiving's cost lands: each component's CPU ms per checkout, medians on and off.
    cpu = {}
    if costs["on"] and costs["off"]:
        for name in costs["off"][0]:
            med = {m: statistics.median(c.get(name, 0.0) for c in costs[m]) for m in ("on", "off")}
            cpu[name] = {"on": round(med["on"], 4), "off": round(med["off"], 4),
                         "delta": round(med["on"] - med["off"], 4)}
            print(f"{name:12} CPU ms/checkout  on {med['on']:.3f}  off {med['off']:.3f}  "
                  f"delta {med['on'] - med['off']:+.3f}", file=sys.stderr)
    if args.reports:
        Path(args.reports).write_text(json.dumps(reports))
    print(json.dumps({"runs": runs, "median_on": on, "median_off": off, "ratio_on_off": round(on / off, 3),
                      "cpu_ms_per_checkout": cpu}, indent=2))


def parse_seconds(s: str) -> float:
    for unit, f in (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)):
        if s.endswith(unit) and s[: -len(unit)].isdigit():
            return int(s[: -len(unit)]) * f
    return float(s)


def plot(csv_path: Path, png: Path, title: str = ""):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(csv_path)))
    t = [float(r["seconds"]) for r in rows]
    lags = [(float(r["seconds"]), float(r["lag_s"])) for r in rows if r.get("lag_s")]
    if lags:
        fig, (ax, lag_ax) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, height_ratios=[3, 1])
        lag_ax.plot([s for s, _ in lags], [v for _, v in lags], color="tab:red")
        lag_ax.set_ylabel("archive lag (s)")
        lag_ax.set_xlabel("seconds")
        lag_ax.grid(alpha=0.3)
    else:
        fig, ax = plt.subplots(figsize=(9, 5))
    for name in DB_PORTS:
        ax.plot(t, [int(r[name]) / 2**20 for r in rows], label=f"{name} used_memory")
    ax.plot(t, [int(r["archive"]) / 2**20 for r in rows], "--", label="archive on disk")
    if not lags:
        ax.set_xlabel("seconds")
    ax.set_ylabel("MiB")
    ax.set_title(title or csv_path.parent.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("shoplog")
    r.add_argument("--orders", type=int, default=1_000_000)
    r.add_argument("--concurrency", type=int, default=64)
    r.add_argument("--every", type=float, default=10)
    r.add_argument("--retain", default="60s")
    r.add_argument("--out")
    r.add_argument("--keep", action="store_true")
    r.add_argument("--no-checks", action="store_true",
                   help="skip the audit and the replays (a run that only asks whether archiving keeps pace)")
    c = sub.add_parser("compare")
    c.add_argument("shoplog")
    c.add_argument("--rounds", type=int, default=3)
    c.add_argument("--duration", default="60s")
    c.add_argument("--retain", default="10s")
    c.add_argument("--concurrency", type=int, default=64)
    c.add_argument("--reports", help="write every run's whole `bench --json` report (its cost: CPU and Redis commands per component) to this file")
    p = sub.add_parser("plot")
    p.add_argument("csv")
    p.add_argument("png", nargs="?")
    a = ap.parse_args()
    if a.cmd == "run":
        run(a)
    elif a.cmd == "compare":
        compare(a)
    else:
        plot(Path(a.csv), Path(a.png) if a.png else Path(a.csv).with_suffix(".png"))


if __name__ == "__main__":
    main()
