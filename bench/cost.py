#!/usr/bin/env python3
"""What a checkout costs, for load generators other than `shoplog bench` (wrk): CPU seconds per
1,000 checkouts of every component of a local stack, Redis commands and round trips per checkout,
from two snapshots taken around a load run.

    bench/cost.py snap SHOPLOG DATA_DIR > before.json     # before the run
    bench/cost.py snap SHOPLOG DATA_DIR > after.json      # after it
    bench/cost.py report before.json after.json CHECKOUTS [--json]

A thin wrapper: the snapshot and the report are `shoplog cost snapshot` and `shoplog cost report`
(cli/src/cost.rs), the same computation `shoplog bench` prints, so there is one implementation.
`report` runs $SHOPLOG (default target/release/shoplog).
"""
import os
import subprocess
import sys


def main():
    args = sys.argv[1:]
    if len(args) == 3 and args[0] == "snap":
        shoplog, data_dir = args[1], args[2]
        sys.exit(subprocess.call([shoplog, "cost", "snapshot", "--data-dir", data_dir]))
    if len(args) in (4, 5) and args[0] == "report" and args[4:] in ([], ["--json"]):
        shoplog = os.environ.get("SHOPLOG", "target/release/shoplog")
        cmd = [shoplog, "cost", "report", args[1], args[2], "--checkouts", args[3], *args[4:]]
        sys.exit(subprocess.call(cmd))
    sys.exit(__doc__)


if __name__ == "__main__":
    main()
