"""GET /v1/metrics/live against a real Redis holding known metric values, and the /dashboard page's files."""

from __future__ import annotations

import re

import pytest

from state.metrics import metric_field
from transforms.livemetrics import MINUTE_MS

from .conftest import NOW_MS, assert_problem

NOW_MINUTE = NOW_MS - NOW_MS % MINUTE_MS  # the clock is 20 s into this minute
assert NOW_MS - NOW_MINUTE == 20_000


def put_minute(redis_client, minute: int, rows: dict[tuple, float]) -> None:
    """HSET a minute hash the way the job's attribution does: ``{(experiment, variant, context, position, measure): value}``."""
    redis_client.hset(f"flowrec:v1:metrics:min:{minute}", mapping={metric_field(*key): value for key, value in rows.items()})


def by_group(body: dict) -> dict[tuple[str, str, str], dict]:
    return {(s["experiment"], s["variant"], s["context"]): s for s in body["series"]}


def test_empty_store_answers_aligned_minutes_and_no_series(api):
    response = api.get("/v1/metrics/live", params={"minutes": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    starts = [NOW_MINUTE - k * MINUTE_MS for k in (4, 3, 2, 1, 0)]
    assert body["minute_starts"] == starts and body["now_ms"] == NOW_MS and body["anchor"] == "clock"
    assert body["series"] == [] and body["experiment"] is None
    ops = body["ops"]
    assert ops["minute_starts"] == starts
    assert ops["events"] == ops["late_events"] == ops["dead_letters"] == [0] * 5
    assert ops["events_per_s"] == [0.0] * 5
    assert ops["totals"] == {"events": 0, "late_events": 0, "dead_letters": 0}
    assert ops["freshness_ms"] is None and ops["freshness_p50_ms"] is None and ops["freshness_samples"] == 0
    assert api.get("/v1/metrics/live").json()["minute_starts"][0] == NOW_MINUTE - 59 * MINUTE_MS  # 60 by default


def test_known_counts_give_per_minute_rates_per_variant_and_context(api, redis_client):
    before = NOW_MINUTE - MINUTE_MS
    put_minute(redis_client, before, {
        ("shop", "A", "home", "all", "impressions"): 40, ("shop", "A", "home", "all", "clicks"): 4,
        ("shop", "A", "home", 0, "impressions"): 20, ("shop", "A", "home", 0, "clicks"): 3,  # per position: not counted twice
        ("shop", "A", "home", "all", "choices"): 5, ("shop", "A", "home", "all", "hits"): 2,
        ("shop", "B", "home", "all", "impressions"): 50, ("shop", "B", "home", "all", "clicks"): 10,
        ("shop", "B", "home", "all", "purchases"): 2, ("shop", "B", "home", "all", "revenue"): 31.5,
    })
    put_minute(redis_client, NOW_MINUTE, {
        ("shop", "A", "cart", "all", "impressions"): 10, ("shop", "A", "cart", "all", "clicks"): 1,
        ("~", "~", "home", "all", "impressions"): 8,
    })
    put_minute(redis_client, NOW_MINUTE - 5 * MINUTE_MS, {("shop", "A", "home", "all", "impressions"): 1000})  # outside the 3 minutes
    put_minute(redis_client, NOW_MINUTE + MINUTE_MS, {("shop", "A", "home", "all", "impressions"): 1000})  # ahead of the clock

    body = api.get("/v1/metrics/live", params={"minutes": 3}).json()
    assert body["minute_starts"] == [NOW_MINUTE - 2 * MINUTE_MS, before, NOW_MINUTE]
    groups = by_group(body)
    assert sorted(groups) == [("shop", "A", "all"), ("shop", "A", "cart"), ("shop", "A", "home"), ("shop", "B", "all"), ("shop", "B", "home"), ("~", "~", "all"), ("~", "~", "home")]
    a_home = groups["shop", "A", "home"]
    assert a_home["impressions"] == [0, 40, 0] and a_home["clicks"] == [0, 4, 0]
    assert a_home["ctr"] == [None, 0.1, None]
    assert a_home["hit_rate"] == [None, 0.4, None]
    b_home = groups["shop", "B", "home"]
    assert b_home["ctr"] == [None, 0.2, None] and b_home["conversion"] == [None, 0.04, None]
    assert b_home["revenue"] == [0, 31.5, 0]
    a_all = groups["shop", "A", "all"]
    assert a_all["impressions"] == [0, 40, 10] and a_all["ctr"] == [None, 0.1, 0.1]
    assert a_all["totals"] == {"impressions": 50, "clicks": 5, "carts": 0, "purchases": 0, "revenue": 0, "choices": 5, "hits": 2, "ctr": 0.1, "conversion": 0.0, "hit_rate": 0.4}
    assert groups["~", "~", "home"]["impressions"] == [0, 0, 8]

    only = api.get("/v1/metrics/live", params={"minutes": 3, "experiment": "~"}).json()
    assert only["experiment"] == "~" and sorted(by_group(only)) == [("~", "~", "all"), ("~", "~", "home")]
    assert api.get("/v1/metrics/live", params={"minutes": 3, "experiment": "other"}).json()["series"] == []


def test_events_per_second_from_the_job_minutes(api, store, redis_client):
    store.add_stats({"events": 1200, "late_events": 3}, minute_ms=NOW_MINUTE - MINUTE_MS)
    store.add_stats({"events": 100, "dead_letters": 2, "dead_letters:bad_rec_id": 2}, minute_ms=NOW_MINUTE)
    store.add_stats({"events": 999}, minute_ms=NOW_MINUTE - 10 * MINUTE_MS)  # counted in the totals only
    ops = api.get("/v1/metrics/live", params={"minutes": 3}).json()["ops"]
    assert ops["events"] == [0, 1200, 100] and ops["late_events"] == [0, 3, 0] and ops["dead_letters"] == [0, 0, 2]
    # 1200 over a finished minute; 100 over the 20 s of the current one
    assert ops["events_per_s"] == [0.0, 20.0, 5.0]
    assert ops["totals"] == {"events": 2299, "late_events": 3, "dead_letters": 2}
    assert ops["dead_letter_reasons"] == {"bad_rec_id": 2}


def test_freshness_from_the_last_window_and_the_recorded_lags(api, store):
    store.set_stats({"last_window_ts": NOW_MS - 1500})
    store.record_freshness(list(range(1, 201)))
    ops = api.get("/v1/metrics/live", params={"minutes": 1}).json()["ops"]
    assert ops["last_window_ts"] == NOW_MS - 1500 and ops["freshness_ms"] == 1500
    assert (ops["freshness_p50_ms"], ops["freshness_p99_ms"], ops["freshness_samples"]) == (100, 198, 200)


def test_anchor_job_ends_the_minutes_at_the_jobs_newest_window(api, store, redis_client):
    simulated = 1_600_000_050_000  # a simulation's event time, far from the API clock
    minute = simulated - simulated % MINUTE_MS
    store.set_stats({"last_window_ts": simulated})
    put_minute(redis_client, minute, {("sim", "control", "home", "all", "impressions"): 100, ("sim", "control", "home", "all", "clicks"): 7})
    body = api.get("/v1/metrics/live", params={"minutes": 2, "anchor": "job"}).json()
    assert body["anchor"] == "job" and body["minute_starts"] == [minute - MINUTE_MS, minute]
    assert by_group(body)["sim", "control", "home"]["ctr"] == [None, 0.07]
    assert body["ops"]["minute_starts"] == [NOW_MINUTE - MINUTE_MS, NOW_MINUTE]  # the job's own numbers follow the clock
    # a window ending exactly on a minute holds events of the minute before it
    store.set_stats({"last_window_ts": minute + MINUTE_MS})
    assert api.get("/v1/metrics/live", params={"minutes": 1, "anchor": "job"}).json()["minute_starts"] == [minute]
    assert api.get("/v1/metrics/live", params={"minutes": 1}).json()["series"] == []  # the clock's minutes have nothing


def test_anchor_job_before_any_window_falls_back_to_the_clock(api, store):
    body = api.get("/v1/metrics/live", params={"minutes": 1, "anchor": "job"}).json()
    assert body["anchor"] == "clock" and body["minute_starts"] == [NOW_MINUTE]
    for unusable in (-5, 0, 90_000):  # no minute of these could have been counted
        store.set_stats({"last_window_ts": unusable})
        body = api.get("/v1/metrics/live", params={"minutes": 2, "anchor": "job"}).json()
        assert body["anchor"] == "clock" and body["minute_starts"][-1] == NOW_MINUTE


def test_the_minutes_follow_the_api_clock(api, clock):
    clock.now_ms = NOW_MINUTE + 5 * MINUTE_MS + 1
    assert api.get("/v1/metrics/live", params={"minutes": 1}).json()["minute_starts"] == [NOW_MINUTE + 5 * MINUTE_MS]


@pytest.mark.parametrize("params", [{"minutes": 0}, {"minutes": 1441}, {"minutes": "x"}, {"experiment": "a b"}, {"experiment": "x" * 33}, {"experiment": "a|b"}, {"anchor": "wall"}], ids=repr)
def test_bad_parameters_are_problems(api, params):
    assert_problem(api.get("/v1/metrics/live", params=params), 422, "validation")


def test_unreadable_fields_are_skipped(api, redis_client):
    redis_client.hset(f"flowrec:v1:metrics:min:{NOW_MINUTE}", mapping={"garbage": 5, metric_field("e", "A", "home", "all", "impressions"): 4})
    assert [s["impressions"] for s in api.get("/v1/metrics/live", params={"minutes": 1}).json()["series"]] == [[4], [4]]


def test_dashboard_page_and_its_files_are_served_without_a_key(api):
    page = api.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert '<html lang="en">' in html and "<title>flowrec live dashboard</title>" in html
    files = re.findall(r'(?:src|href)="(/[^"]+)"', html)
    assert sorted(files) == ["/dashboard/static/dashboard.css", "/dashboard/static/dashboard.js", "/v1/experiments", "/v1/metrics/live"]
    for path in files:
        assert api.get(path).status_code == 200, path
    script = api.get("/dashboard/static/dashboard.js").text
    # Nothing loaded from elsewhere: no absolute URL in the page or its script but the SVG namespace.
    assert re.findall(r"https?://[^\s\"'`]+", html) == []
    assert set(re.findall(r"https?://[^\s\"'`]+", script)) == {"http://www.w3.org/2000/svg"}
    assert "/v1/metrics/live" in script
    assert api.get("/").json()["dashboard"] == "/dashboard"
