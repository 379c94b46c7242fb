"""Bad input at scale, the long run (`make test-faults`): 10,240 generated hostile HTTP requests
through the gateway, 8 at a time — every method, bodies of 0 to 200 KB (over the 16 KiB limit
too), chunked or with a wrong but parseable Content-Length, `Expect: 100-continue`, odd headers,
hostile path parameters (see `hostile.py`).

Issue 13 found 14–26 answers of 503 in such a run: a service answered before reading a request's
body and closed the connection under nginx, which was still writing the body into it. Now no
answer may be a 5xx, every refusal is a JSON 4xx, and sentinel entities stay as created.
`test_fuzz.py` runs a smaller run (1,280 requests) in `make test`.
"""

import pytest

from hostile import run_http_fuzz

BATCHES = 160  # of 64 requests: 10,240


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ten_thousand_hostile_http_requests_get_no_5xx_and_change_nothing():
    fuzz = run_http_fuzz(batches=BATCHES)
    print(f"\n[fuzz] {fuzz.summary()}")
    assert fuzz.sent == BATCHES * 64 >= 10_000
