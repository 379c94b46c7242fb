"""ID service: ULIDs, one at a time or in strictly increasing batches."""

import re
import time

import pytest

from helpers import assert_error, content_type, ok_json, run_concurrently

ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")  # Crockford base32, 128 bits
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid_ms(ulid: str) -> int:
    """The millisecond timestamp in a ULID's first 10 characters."""
    ms = 0
    for ch in ulid[:10]:
        ms = ms * 32 + CROCKFORD.index(ch)
    return ms


def create(api) -> str:
    r = api.get("/ids/create")
    assert r.status_code == 200, r.text
    assert content_type(r).startswith("text/plain"), r.headers
    return r.text


def batch(api, n: int) -> list[str]:
    body = ok_json(api.post(f"/ids/batch/{n}"))
    assert set(body) == {"ids"}
    assert isinstance(body["ids"], list)
    return body["ids"]


def test_create_answers_one_ulid_as_text(api):
    before = int(time.time() * 1000)
    ulid = create(api)
    after = int(time.time() * 1000)
    assert len(ulid) == 26 and ULID.match(ulid), repr(ulid)
    # Its timestamp is the current time (allowing for clock granularity and a little skew).
    assert before - 2000 <= ulid_ms(ulid) <= after + 2000


def test_create_twice_gives_increasing_ids(api):
    ids = [create(api) for _ in range(50)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 50


@pytest.mark.parametrize("n", [1, 2, 1000])
def test_batch_gives_n_strictly_increasing_ulids(api, n):
    ids = batch(api, n)
    assert len(ids) == n
    assert all(isinstance(i, str) and ULID.match(i) for i in ids), ids[:5]
    assert all(a < b for a, b in zip(ids, ids[1:]))


def test_batch_of_max_size(api):
    ids = batch(api, 100000)
    assert len(ids) == 100000
    assert all(a < b for a, b in zip(ids, ids[1:]))
    assert ULID.match(ids[0]) and ULID.match(ids[-1])


def test_batches_increase_across_calls(api):
    first = batch(api, 500)
    single = create(api)
    second = batch(api, 500)
    assert first[-1] < single < second[0]


@pytest.mark.parametrize("n", ["0", "100001", "-1", "abc", "1.5", "9223372036854775808"])
def test_batch_size_out_of_range_is_refused(api, n):
    assert_error(api.post(f"/ids/batch/{n}"), 400)


def test_concurrent_batches_are_unique_and_each_increasing(api):
    batches = run_concurrently(lambda a, _: batch(a, 100), range(64), workers=32)
    for b in batches:
        assert len(b) == 100
        assert all(x < y for x, y in zip(b, b[1:]))
    everything = [i for b in batches for i in b]
    assert len(set(everything)) == 64 * 100
