"""When a final saga is queued for retirement (logparser/src/archive.rs, `queue_final`).

A saga's records leave Redis once every log is archived past the moment the archiving pass saw it
final. It is seen final as soon as every consumer group has acknowledged its `log:order` entries
(and the recovery pass has read them), not when those entries are old enough to be archived: so
its records leave one `LOG_RETAIN` after the saga ends, not two (issue 14, point 5: memory flat
after the first retention).

Runs on the suite's own stack (default `LOG_RETAIN`, 5 minutes): a saga checked out now is queued
within a few passes while its entries are still live in Redis.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import STACK_DIRS, shoplog
from helpers import partition, streams, tag, wait_for

OFFSET = int(os.environ.get("SHOPLOG_PORT_OFFSET", "0"))
ORDER_DB = 6401 + OFFSET


def redis_cli(*args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(ORDER_DB), *args], capture_output=True, text=True,
                          timeout=30).stdout.strip()


def test_a_final_saga_is_queued_for_retirement_before_its_entries_are_old_enough_to_archive(api):
    data_dir = STACK_DIRS.get(None)
    if data_dir is None:
        pytest.skip("a stack this suite did not start: no database access")
    status = shoplog(data_dir, "archive", "--json")
    assert status.returncode == 0, status.stderr
    retain_ms = json.loads(status.stdout).get("log_retain_ms")
    if not retain_ms or retain_ms < 60_000:
        pytest.skip(f"LOG_RETAIN is {retain_ms} ms here: entries may be archived as soon as queued")
    p = int(redis_cli("GET", "shoplog:partitions"))

    user = api.create_user(10)
    item = api.create_item(2, 5)
    order = api.create_order(user)
    api.add_item(order, item, 1)
    r = api.post(f"/orders/checkout/{order}")
    assert r.status_code == 200, r.text
    saga = r.json()["saga"]

    part = partition(order, p)
    queue = f"logparser:retire:{tag('order', part, p)}"
    wait_for(lambda: redis_cli("ZSCORE", queue, saga) != "", f"saga {saga} to be queued in {queue}",
             timeout=60, every=0.5)
    # Queued while its entries are still in Redis: it did not wait for them to be archived.
    live = redis_cli("XRANGE", streams("order", p)[part], "-", "+")
    assert saga in live, f"saga {saga}'s entries already left {streams('order', p)[part]}"
    # The cursor that remembers how far the sagas were looked at is kept.
    cursor = redis_cli("GET", f"logparser:queued:{tag('order', part, p)}")
    assert cursor, "no queue cursor"
