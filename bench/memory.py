#!/usr/bin/env python3
"""Redis memory over a long checkout run: does archiving keep it bounded?

    bench/memory.py run SHOPLOG [--orders N] [--every 10] [--retain 60s] [--out DIR]
    bench/memory.py plot DIR/memory.csv [DIR/memory.png]

`run` starts a fresh stack of its own (SHOPLOG_PORT_OFFSET / SHOPLOG_GATEWAY_PORT from the
environment, default 5500 / 9550) with LOG_RETAIN=--retain, runs `shoplog bench --orders N
--no-audit`, and samples every database's `used_memory` (INFO memory) and the archive's bytes on
disk every --every seconds into DIR/memory.csv, until the run is over and the archive has caught
up (one more retention); then it audits, plots DIR/memory.png and stops the stack (--keep: leave
it up). Without archiving (`--retain off`) the same run shows the growth it prevents.

Needs matplotlib for the plot (bench/requirements.txt).
"""
import argparse
import csv
import json
import os
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
    try:
        bench = subprocess.Popen([args.shoplog, "bench", "--orders", str(args.orders), "--no-audit", "--json",
                                  "--concurrency", str(args.concurrency)], env=env,
                                 stdout=open(out / "bench.json", "w"), stderr=subprocess.DEVNULL)
        started = time.monotonic()
        tail = None  # when the bench ended, plus one retention and two samples
        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["seconds", *DB_PORTS, "archive"])
            while True:
                row = [round(time.monotonic() - started, 1)]
                row += [used_memory(p + offset) for p in DB_PORTS.values()]
                row.append(dir_bytes(data / "archive"))
                w.writerow(row)
                f.flush()
                print(" ".join(str(x) for x in row), file=sys.stderr)
                if tail is None and bench.poll() is not None:
                    retain = 0 if args.retain == "off" else parse_seconds(args.retain)
                    tail = time.monotonic() + retain + 2 * args.every + 10
                if tail is not None and time.monotonic() > tail:
                    break
                time.sleep(args.every)
        audit = sh("audit", capture_output=True, text=True)
        print(audit.stdout.strip().splitlines()[-1] if audit.stdout.strip() else audit.stderr, file=sys.stderr)
        plot(csv_path, out / "memory.png", title=f"{args.orders} checkouts, LOG_RETAIN={args.retain}")
        print(out / "memory.png")
    finally:
        if not args.keep:
            sh("down", "--wipe", capture_output=True)


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
    fig, ax = plt.subplots(figsize=(9, 5))
    for name in DB_PORTS:
        ax.plot(t, [int(r[name]) / 2**20 for r in rows], label=f"{name} used_memory")
    ax.plot(t, [int(r["archive"]) / 2**20 for r in rows], "--", label="archive on disk")
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
    p = sub.add_parser("plot")
    p.add_argument("csv")
    p.add_argument("png", nargs="?")
    a = ap.parse_args()
    if a.cmd == "run":
        run(a)
    else:
        plot(Path(a.csv), Path(a.png) if a.png else Path(a.csv).with_suffix(".png"))


if __name__ == "__main__":
    main()
