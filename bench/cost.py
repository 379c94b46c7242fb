#!/usr/bin/env python3
"""What a checkout costs: CPU seconds per 1,000 checkouts of every component of a local stack, and
Redis commands per checkout of every database, from two snapshots taken around a load run.

    bench/cost.py snap SHOPLOG DATA_DIR > before.json     # before the run
    bench/cost.py snap SHOPLOG DATA_DIR > after.json      # after it
    bench/cost.py report before.json after.json CHECKOUTS [--json]

A snapshot holds, for each component `shoplog status --json` lists, the CPU time (user + system)
of its process and its live descendants (nginx's workers), and for each Redis the calls of every
command (`INFO commandstats`). The report is the difference divided by the checkouts the run made.
Absolute rates on a shared machine are noise; CPU time and commands per checkout are not.
"""
import json
import os
import socket
import subprocess
import sys

TICK = os.sysconf("SC_CLK_TCK")


def children_of():
    """Map pid -> child pids, from /proc."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def cpu_seconds(pid, kids):
    """User + system CPU seconds of `pid` and its live descendants."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            continue
        todo.extend(kids.get(p, []))
    return total / TICK


def redis_commandstats(port):
    """{command: {calls, usec}} of the Redis on 127.0.0.1:`port` (RESP spoken directly: no redis-cli
    needed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            head, _, rest = buf.partition(b"\r\n")
            if head.startswith(b"$") and len(rest) >= int(head[1:]):
                break
    stats = {}
    for line in buf.decode().splitlines():
        if line.startswith("cmdstat_"):
            name, values = line[len("cmdstat_"):].split(":", 1)
            fields = dict(kv.split("=", 1) for kv in values.split(","))
            stats[name] = {"calls": int(fields["calls"]), "usec": int(fields["usec"])}
    return stats


def snap(shoplog, data_dir):
    status = json.loads(
        subprocess.check_output([shoplog, "status", "--json", "--data-dir", data_dir])
    )
    kids = children_of()
    out = {}
    for c in status:
        if not c.get("pid"):
            continue
        entry = {"cpu": cpu_seconds(c["pid"], kids)}
        if "-db" in c["name"] or c["name"].startswith("lock-"):
            entry["commands"] = redis_commandstats(c["port"])
        out[c["name"]] = entry
    return out


def report(before, after, checkouts):
    rows = []
    for name, a in after.items():
        b = before.get(name, {"cpu": 0, "commands": {}})
        row = {"component": name, "cpu_s_per_1k": (a["cpu"] - b["cpu"]) * 1000 / checkouts}
        if "commands" in a:
            per, usec = {}, {}
            zero = {"calls": 0, "usec": 0}
            for cmd, now in a["commands"].items():
                was = b.get("commands", {}).get(cmd, zero)
                if now["calls"] > was["calls"]:
                    per[cmd] = (now["calls"] - was["calls"]) / checkouts
                    usec[cmd] = (now["usec"] - was["usec"]) / checkouts
            row["commands_per_checkout"] = dict(sorted(per.items(), key=lambda kv: -kv[1]))
            # Time Redis spent executing each command (INFO commandstats `usec`), per checkout.
            row["command_usec_per_checkout"] = dict(sorted(usec.items(), key=lambda kv: -kv[1]))
        rows.append(row)
    return rows


def main():
    args = sys.argv[1:]
    if len(args) == 3 and args[0] == "snap":
        json.dump(snap(args[1], args[2]), sys.stdout)
        return
    if len(args) in (4, 5) and args[0] == "report":
        with open(args[1]) as f:
            before = json.load(f)
        with open(args[2]) as f:
            after = json.load(f)
        n = int(args[3])
        if n <= 0:
            sys.exit("no checkouts were made: nothing to divide by")
        rows = report(before, after, n)
        if args[4:] == ["--json"]:
            json.dump(rows, sys.stdout, indent=2)
            print()
            return
        total = sum(r["cpu_s_per_1k"] for r in rows)
        print(f"cost per checkout over {n} checkouts (CPU s per 1,000 checkouts; commands per checkout)")
        for r in rows:
            cmds = ", ".join(
                f"{c} {v:.2f}" for c, v in list(r.get("commands_per_checkout", {}).items())[:8]
            )
            print(f"  {r['component']:<12} {r['cpu_s_per_1k']:6.3f}  {cmds}")
            if os.environ.get("COST_USEC"):
                usec = ", ".join(
                    f"{c} {v:.1f}us"
                    for c, v in list(r.get("command_usec_per_checkout", {}).items())[:8]
                )
                print(f"  {'':<12} {'':6}  {usec}")
        print(f"  {'total':<12} {total:6.3f}  (load generator excluded)")
        return
    sys.exit(__doc__)


if __name__ == "__main__":
    main()
