"""Pure parts of `flowrec bench api`: quantiles, wrk's report, and the fixed-rate driver against a real server."""

from __future__ import annotations

import pytest

from bench.api import parse_wrk, percentile, python_load

WRK_OUTPUT = """Running 2s test @ http://127.0.0.1:57711/v1/users/bench-user/recommendations?n=10
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.68ms    6.62ms  45.64ms   93.78%
    Req/Sec    14.35k     2.48k   17.02k    70.00%
  Latency Distribution
     50%  850.00us
     75%    2.12ms
     90%    2.71ms
     99%   38.72ms
  28523 requests in 2.00s, 24.48MB read
  Non-2xx or 3xx responses: 3
Requests/sec:  14250.90
Transfer/sec:     12.23MB
"""


def test_percentile_interpolates_between_ranks():
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert percentile(values, 0.5) == 3.0
    assert percentile(values, 0.99) == pytest.approx(4.96)
    assert percentile([7.0], 0.99) == 7.0


def test_parse_wrk():
    result = parse_wrk(WRK_OUTPUT)
    assert (result.responses, result.errors, result.seconds) == (28523, 3, 2.0)
    assert result.p50_ms == pytest.approx(0.85) and result.p99_ms == pytest.approx(38.72)
    assert result.requests_per_s == pytest.approx(14261.5)
    with pytest.raises(ValueError):
        parse_wrk("wrk: connection refused")


@pytest.mark.parametrize("rate", [None, 400.0])
def test_python_load_generator_counts_every_answer(api, rate):
    port = api.base_url.port
    result = python_load("127.0.0.1", port, "/v1/users/u1/recommendations?n=3", 120, 8, rate)
    assert (result.responses, result.errors) == (120, 0)
    errors = python_load("127.0.0.1", port, "/v1/users/u*/recommendations", 10, 2)
    assert (errors.responses, errors.errors) == (10, 10)
