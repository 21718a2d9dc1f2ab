"""`flowrec bench api`: quantiles, wrk's report, the fixed-rate driver and the compared API variants against real servers."""

from __future__ import annotations

import argparse
import subprocess
import sys

import httpx
import orjson
import pytest

from api.app import create_app
from bench.api import ROUTES, VARIANTS, add_arguments, main, parse_wrk, percentile, python_load, seed_redis
from flowrec.config import Settings
from tests.envkit import clean_environment

from .conftest import running

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


def test_every_variant_gives_the_same_answers(redis_url, stopping_servers):
    """The variants compared differ only in how they get the answer: same bodies on every route."""
    seed_redis(redis_url, 20)
    bodies: dict[str, list[bytes]] = {}
    for variant, options in VARIANTS.items():
        with running(create_app(Settings(redis_url=redis_url), **options), stopping_servers) as base, httpx.Client(base_url=base) as client:
            responses = [client.get(path.format(n=n)) for path in ROUTES.values() for n in (3, 30)]
        assert all(r.status_code == 200 for r in responses), (variant, [r.text for r in responses])
        bodies[variant] = [orjson.loads(r.content) for r in responses]
        # Each response's rec_id is new (a random nonce): every one has its own, the rest must match.
        rec_ids = [body.pop("rec_id") for body in bodies[variant]]
        assert len(set(rec_ids)) == len(responses), variant
    reference = bodies.pop("handwritten+shortcut")
    assert reference[0]["items"][0]["item"] == "i000000" and len(reference[1]["items"]) == 30  # a list topped up from trending
    for variant, answers in bodies.items():
        assert answers == reference, variant


def test_unknown_variants_or_routes_are_usage_errors(capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert main(parser.parse_args(["--variants", "handwritten+shortcut,fastest"])) == 2
    assert "unknown variant fastest" in capsys.readouterr().err
    assert main(parser.parse_args(["--routes", ""])) == 2
    assert "unknown route (none given)" in capsys.readouterr().err


def test_bench_api_command_compares_the_variants_side_by_side():
    command = [sys.executable, "-m", "flowrec.cli", "bench", "api", "--client", "python", "--requests", "60", "--warmup", "10", "--concurrency", "4", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=clean_environment())
    assert done.returncode == 0, done.stderr
    result = orjson.loads(done.stdout)
    assert list(result["variants"]) == ["handwritten+shortcut", "redis-asyncio+fastapi"]
    for cells in result["variants"].values():
        assert set(cells) == set(ROUTES)
        for cell in cells.values():
            assert cell["errors"] == 0 and cell["requests_per_s"] > 0 and 0 < cell["latency_ms"]["p50"] <= cell["latency_ms"]["p99"]
