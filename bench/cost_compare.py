#!/usr/bin/env python3
"""Cost per checkout of two builds, side by side (issue 15): for each round, a fresh stack of build
A, `shoplog bench --orders N --json`, `down --wipe`; then the same with build B (rounds alternate
which build goes first). Both stacks are loaded and measured by the same `shoplog` (the new
build's, MEASURE to change it), so the load generator and the report do not differ. Prints each
run's total CPU ms per checkout (load generator excluded), then the medians per component and
the ratio new/base: CPU and commands per checkout hold on a shared machine, rates do not.

    bench/cost_compare.py BASE_SHOPLOG NEW_SHOPLOG [ROUNDS] [ORDERS]

Environment: COST_PORT_OFFSET (default 5700), COST_GATEWAY_PORT (9570), CONNECTIONS (64),
POPULATION (100000), MEASURE (the shoplog that runs `bench`; default NEW_SHOPLOG),
COST_COMPARE_JSON (a file to write every run's report to).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile


def run_one(shoplog, measure, orders, env):
    data = tempfile.mkdtemp(prefix="shoplog-costcmp-")
    env = dict(env, SHOPLOG_DATA_DIR=data)
    try:
        up = subprocess.run([shoplog, "up", "--detach"], env=env, capture_output=True, text=True)
        if up.returncode != 0:
            sys.exit(f"{shoplog} up failed: {up.stderr}")
        out = subprocess.run(
            [measure, "bench", "--orders", str(orders), "-c", os.environ.get("CONNECTIONS", "64"),
             "--population", os.environ.get("POPULATION", "100000"), "--no-audit", "--json"],
            env=env, capture_output=True, text=True,
        )
        if out.returncode != 0:
            sys.exit(f"bench failed ({out.returncode}): {out.stderr}")
        return json.loads(out.stdout)
    finally:
        subprocess.run([shoplog, "down", "--wipe"], env=env, capture_output=True)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    base, new = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    orders = int(sys.argv[4]) if len(sys.argv) > 4 else 30000
    measure = os.environ.get("MEASURE", new)
    env = dict(
        os.environ,
        SHOPLOG_PORT_OFFSET=os.environ.get("COST_PORT_OFFSET", "5700"),
        SHOPLOG_GATEWAY_PORT=os.environ.get("COST_GATEWAY_PORT", "9570"),
    )
    runs = {"base": [], "new": []}
    for r in range(1, rounds + 1):
        order = ["base", "new"] if r % 2 else ["new", "base"]
        for build in order:
            report = run_one(base if build == "base" else new, measure, orders, env)
            cost = report["cost"]
            runs[build].append(report)
            print(f"round {r} {build}: {cost['total_cpu_s_per_1k']:.3f} CPU ms/checkout, "
                  f"{report['throughput']:.0f}/s, p50 {report['p50_ms']:.1f} ms, "
                  f"p99 {report['p99_ms']:.1f} ms, non-2xx {report['checkouts'] - report['status_2xx']}",
                  flush=True)
    if os.environ.get("COST_COMPARE_JSON"):
        with open(os.environ["COST_COMPARE_JSON"], "w") as f:
            json.dump(runs, f)

    def med(build, pick):
        return statistics.median(pick(r) for r in runs[build])

    names = [c["component"] for c in runs["base"][0]["cost"]["components"]]
    print(f"\nmedians of {rounds} runs each, CPU ms per checkout (load generator excluded)")
    print(f"{'component':<12} {'base':>7} {'new':>7} {'new/base':>9}")
    for name in names + ["total"]:
        if name == "total":
            pick = lambda r: r["cost"]["total_cpu_s_per_1k"]
        else:
            pick = lambda r, n=name: next(
                c["cpu_s_per_1k"] for c in r["cost"]["components"] if c["component"] == n)
        b, n = med("base", pick), med("new", pick)
        ratio = f"{n / b:.3f}" if b > 0 else "-"
        print(f"{name:<12} {b:7.3f} {n:7.3f} {ratio:>9}")
    for key in ("throughput", "p50_ms", "p99_ms"):
        b, n = med("base", lambda r: r[key]), med("new", lambda r: r[key])
        print(f"{key:<12} {b:7.1f} {n:7.1f} {n / b:9.3f}")


if __name__ == "__main__":
    main()
