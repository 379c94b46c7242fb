"""Archiving (DESIGN.md, "Retention and archive"): the active log parser moves acknowledged,
final, old log entries into zstd segment files and retires final saga records; audit, replay and
the saga timeline read archive + live log as one history.

One stack (offset 3500, gateway 9350) with LOG_RETAIN=1s:
- a checkout storm is archived while it runs; afterwards the audit is clean, `replay --diff` is
  empty for every service, saga records were retired, and the archive reads with zstdcat + jq;
- the log parser killed mid-pass (after the fsync and before the trim; and with half a frame
  written, before the fsync) loses nothing and doubles nothing;
- a stalled saga (payment frozen) is never archived, and the lagging consumer's entries stay in
  Redis until it has acknowledged them;
- a saga that fails the atomicity check is not retired (its records stay for the audit to
  report), while a sound one checked out beside it is.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from conftest import shoplog_bin
from harness import FaultStack, Storm, settle_and_verify, wait_for
from helpers import Api, key, metric, partition, streams, tag

OFFSET, GATEWAY = 3500, 9350
DB_PORTS = {"order": 6401 + OFFSET, "stock": 6402 + OFFSET, "payment": 6403 + OFFSET}
P = 16


def redis_cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True,
                          timeout=30).stdout.strip()


@pytest.fixture(scope="module")
def stack():
    s = FaultStack(offset=OFFSET, gateway=GATEWAY)
    s.flag = s.data_dir / "archive-crash"
    s.env.update(LOG_RETAIN="1s", SHOPLOG_TEST_ARCHIVE_CRASH=str(s.flag))
    s.up()
    yield s
    s.down()


def archive_status(stack) -> dict:
    out = stack.run("archive", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def archived_records(stack) -> dict[str, list[str]]:
    """Every archived entry id, by stream, read with zstdcat (a torn last frame fails zstdcat)."""
    out: dict[str, list[str]] = {}
    for seg in sorted((stack.data_dir / "archive").rglob("*.jsonl.zst")):
        text = subprocess.run(["zstdcat", str(seg)], capture_output=True, text=True, check=True).stdout
        for line in text.splitlines():
            r = json.loads(line)
            out.setdefault(r["stream"], []).append(r["id"])
    return out


def live_ids(service: str) -> dict[str, list[str]]:
    out = {}
    for s in streams(service, P):
        lines = redis_cli(DB_PORTS[service], "XRANGE", s, "-", "+").splitlines()
        # redis-cli prints each entry as its id followed by its fields; ids look like <ms>-<seq>.
        out[s] = [l for l in lines if l[:1].isdigit() and "-" in l and l.replace("-", "").isdigit()]
    return out


def id_key(i: str) -> tuple[int, int]:
    ms, seq = i.split("-")
    return int(ms), int(seq)


def assert_one_history(stack):
    """Audit clean, replay --diff empty for every service, no id archived twice."""
    audit = stack.run("audit", "--json")
    assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr
    for service in ("order", "stock", "payment"):
        out = stack.run("replay", service, "--diff")
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    for stream, ids in archived_records(stack).items():
        assert len(ids) == len(set(ids)), f"{stream}: an entry archived twice"
        assert ids == sorted(ids, key=id_key), f"{stream}: archive out of order"
    return json.loads(audit.stdout)


def test_a_storm_is_archived_and_audit_and_replay_read_one_history(stack):
    # The log parser's first passes have run (the startup pass scans records and notes nothing):
    # the storm's log:order entries are then read by incremental passes, which note them.
    wait_for(lambda: metric(8105 + OFFSET, "archive_passes_total") >= 1, "the first archiving pass",
             timeout=60, every=0.5)
    storm = Storm(stack, n_orders=600, workers=16)
    result = storm.run("archiving under a storm", kills=[])
    settle_and_verify(stack, storm, result)
    # Everything final and older than LOG_RETAIN leaves Redis within a few passes.
    wait_for(lambda: archive_status(stack)["retire_queue"] == 0 and redis_cli(
        DB_PORTS["order"], "EVAL", "return #redis.call('KEYS', 'saga:*')", "0") == "0",
        "every saga record to be retired", timeout=60, every=1)
    status = archive_status(stack)
    assert status["segments"] > 0 and status["bytes"] > 0
    # The lag is measured against the running daemon's LOG_RETAIN, not the CLI's environment's.
    elsewhere = subprocess.run([str(shoplog_bin()), "archive", "--json"], env={**stack.env, "LOG_RETAIN": "1h"},
                               capture_output=True, text=True, timeout=60)
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert json.loads(elsewhere.stdout)["log_retain_ms"] == 1000
    report = assert_one_history(stack)
    assert sum(report["sagas"].values()) == storm.n_orders, report["sagas"]
    # The retirement queue took log:order from the recovery pass's notes, not from a second read
    # of the log (logparser/src/sightings.rs). How much it read from Redis as well depends on
    # timing: until its cursor passes where the notes begin (the first incremental pass), it
    # reads, and re-reads its stretch each pass while an in-flight saga holds it there. So: it
    # used the notes.
    noted = metric(8105 + OFFSET, "archive_queue_noted_total")
    read = metric(8105 + OFFSET, "archive_queue_read_total")
    assert noted > 0, f"queue: {noted} entries from the notes, {read} read from Redis"
    # log:stock and log:payment entries of sagas the queue saw final were archived without asking
    # order-db again (logparser/src/finality.rs).
    remembered = metric(8105 + OFFSET, "archive_final_remembered_total")
    assert remembered > 0, "every saga of log:stock and log:payment was asked about again"
    # The archive is zstd JSON lines: jq reads it.
    seg = next((stack.data_dir / "archive" / "order").rglob("*.jsonl.zst"))
    jq = subprocess.run(f"zstdcat {seg} | jq -r .fields.type | sort -u", shell=True,
                        capture_output=True, text=True)
    assert "CheckoutStarted" in jq.stdout, jq.stdout + jq.stderr
    # The order side's records are retired with their fields, a participant's by key alone.
    for service, field in (("order", "records"), ("stock", "keys"), ("payment", "keys")):
        segs = " ".join(str(p) for p in (stack.data_dir / "archive" / service).rglob("*.jsonl.zst"))
        forms = subprocess.run(
            f"zstdcat {segs} | jq -c 'select(.fields.type == \"RecordsRetired\") | .fields | keys' | sort -u",
            shell=True, capture_output=True, text=True)
        expected = json.dumps(sorted(["log_id", field, "type"]), separators=(",", ":"))
        assert forms.stdout.split() == [expected], (service, forms.stdout, forms.stderr)
    # A retired saga's timeline still comes from the archive.
    order = next(o for o, s in result.answers.items() if s == 200)
    out = stack.run("saga", order, "--json")
    assert out.returncode == 0, out.stderr
    kinds = [s["kind"] for s in json.loads(out.stdout)[0]["timeline"]]
    assert kinds[0] == "CheckoutStarted" and "CheckoutCommitted" in kinds, kinds
    assert "RecordsRetired" in kinds, kinds


def logparser_down(stack) -> bool:
    try:
        c = stack.status()["logparser"]
    except (KeyError, json.JSONDecodeError):
        return True
    return c.get("pid") is None or c.get("health") != "ok"


@pytest.mark.parametrize("point", ["after_fsync", "before_fsync"])
def test_a_log_parser_killed_mid_pass_loses_nothing_and_doubles_nothing(stack, point):
    api = Api(stack.base)
    stack.flag.write_text(point)
    # New entries to archive: fund some users and add stock.
    for i in range(30):
        api.post(f"/payment/add_funds/{i}/1")
        api.post(f"/stock/add/{i % 50}/1")
    api.close()
    wait_for(lambda: not stack.flag.exists(), f"the log parser to reach {point}", timeout=30)
    wait_for(lambda: logparser_down(stack), "the log parser to exit", timeout=15)
    if point == "after_fsync":
        # Archived and not trimmed: some entries are in both places.
        archived = archived_records(stack)
        live = {**live_ids("order"), **live_ids("stock"), **live_ids("payment")}
        both = [s for s, ids in archived.items() if set(ids) & set(live.get(s, []))]
        assert both, "the crash after the fsync should leave archived entries in Redis"
    else:
        # Half a frame: zstdcat fails on the torn segment, our readers do not.
        torn = [seg for seg in (stack.data_dir / "archive").rglob("*.jsonl.zst")
                if subprocess.run(["zstdcat", str(seg)], capture_output=True).returncode != 0]
        assert torn, "the crash before the fsync should leave a torn frame"
        audit = stack.run("audit")
        assert audit.returncode == 0, audit.stdout[-3000:]
    stack.up()
    time.sleep(3)  # a few passes: the writer repairs, skips what it holds, trims
    assert_one_history(stack)
    archived = archived_records(stack)
    for service in ("order", "stock", "payment"):
        for s, ids in live_ids(service).items():
            assert not set(ids) & set(archived.get(s, [])), f"{s}: entries both archived and live"


def test_a_stalled_saga_and_a_lagging_consumer_keep_their_entries_in_redis(stack):
    api = Api(stack.base)
    order = api.post("/orders/create/0").json()["order_id"]
    assert api.post(f"/orders/addItem/{order}/1/1").status_code == 200
    stack.pause("payment-1")
    try:
        assert api.post(f"/orders/checkout/{order}", timeout=30).status_code >= 400  # timed out
        time.sleep(6)  # many passes past LOG_RETAIN; the saga waits for payment's confirmation
        sagas = json.loads(stack.run("sagas", "--json").stdout)
        stalled = [s for s in sagas if s["order"] == order and not s["done"]]
        assert stalled, sagas
        sid = stalled[0]["id"]
        entries = [i for s in streams("order", P)
                   for i in redis_cli(DB_PORTS["order"], "XRANGE", s, "-", "+").splitlines() if i == sid]
        assert entries, "the stalled saga's entries left Redis"
        # What payment has taken and not acknowledged is still there, in every stream it reads
        # (what it has not even read yet shows below: the saga could not finish without it).
        for service in ("order", "stock"):
            for s in streams(service, P):
                pending = redis_cli(DB_PORTS[service], "XPENDING", s, "payment").splitlines()
                if not pending or pending[0] == "0":
                    continue
                first = redis_cli(DB_PORTS[service], "XRANGE", s, "-", "+", "COUNT", "1").splitlines()
                assert first and id_key(first[0]) <= id_key(pending[1]), \
                    f"{s}: an entry pending on payment left Redis"
    finally:
        stack.resume("payment-1")
    wait_for(lambda: all(s["done"] for s in json.loads(stack.run("sagas", "--json").stdout)),
             "the saga to finish", timeout=60, every=1)
    assert_one_history(stack)


def test_a_stalled_sagas_entries_stay_in_every_log_even_once_every_group_acknowledged_them(stack):
    """Stock is paused: the checkout times out and is aborted, payment confirms with a
    PaymentRefunded that the order group acknowledges at once, and the saga waits for stock's
    release. Only the saga's finality keeps that entry in log:payment: the archiving pass must
    ask, and not take the saga as final from an earlier answer (logparser/src/finality.rs)."""
    api = Api(stack.base)
    order = api.create_order(api.create_user(100))
    api.add_item(order, api.create_item(1, 10), 1)
    stack.pause("stock-1")
    try:
        assert api.post(f"/orders/checkout/{order}", timeout=30).status_code >= 400  # timed out
        sagas = json.loads(stack.run("sagas", "--json").stdout)
        stalled = [s for s in sagas if s["order"] == order and not s["done"]]
        assert stalled, sagas
        sid = stalled[0]["id"]

        def refunds():
            return [s for s in streams("payment", P)
                    for i in redis_cli(DB_PORTS["payment"], "XRANGE", s, "-", "+").splitlines() if i == sid]
        wait_for(lambda: refunds(), "payment's PaymentRefunded of the aborted saga", timeout=30, every=0.5)
        stream = refunds()[0]
        wait_for(lambda: redis_cli(DB_PORTS["payment"], "XPENDING", stream, "order").splitlines()[:1] == ["0"],
                 "the order group to acknowledge it", timeout=30, every=0.5)
        time.sleep(6)  # many passes past LOG_RETAIN
        assert refunds(), "the stalled saga's PaymentRefunded left Redis"
    finally:
        stack.resume("stock-1")
    wait_for(lambda: all(s["done"] for s in json.loads(stack.run("sagas", "--json").stdout)),
             "the saga to finish", timeout=60, every=1)
    assert_one_history(stack)


def checked_out_saga(api: Api) -> tuple[str, str]:
    """A fresh user, item and order, checked out: (order id, saga id)."""
    order = api.create_order(api.create_user(100))
    api.add_item(order, api.create_item(1, 10), 1)
    r = api.post(f"/orders/checkout/{order}", timeout=30)
    assert r.status_code == 200, r.text
    return order, r.json()["saga"]


def test_a_saga_that_fails_the_atomicity_check_is_not_retired(stack):
    """Retirement checks each saga as the audit would before removing its records: a committed
    saga whose order is not paid stays in Redis, for the audit to report; a sound saga checked out
    beside it is retired."""
    api = Api(stack.base)
    sound_order, sound = checked_out_saga(api)
    broken_order, broken = checked_out_saga(api)
    api.close()
    saga_key = {sid: f"saga:{tag('order', partition(order, P), P)}:{sid}"
                for order, sid in ((sound_order, sound), (broken_order, broken))}
    order_key = key("order:", "order", broken_order, P)
    # Retirement waits LOG_RETAIN (1 s) + the clock margin (5 s) after the saga is queued.
    assert redis_cli(DB_PORTS["order"], "HSET", order_key, "status", "CHECKING_OUT") == "0"
    try:
        wait_for(lambda: redis_cli(DB_PORTS["order"], "EXISTS", saga_key[sound]) == "0",
                 "the sound saga to be retired", timeout=60, every=0.5)
        assert redis_cli(DB_PORTS["order"], "EXISTS", saga_key[broken]) == "1", \
            "a saga that fails the atomicity check was retired"
        audit = stack.run("audit", "--json")
        assert audit.returncode != 0 and broken in audit.stdout, audit.stdout[-3000:] + audit.stderr
    finally:
        redis_cli(DB_PORTS["order"], "HSET", order_key, "status", "PAID")
    # Repaired, the history is whole again (the saga's records stay live: a refused saga leaves
    # the retirement queue, and nothing queues it again).
    assert_one_history(stack)
