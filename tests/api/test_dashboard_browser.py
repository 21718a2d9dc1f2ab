"""The /dashboard page in a real headless Chromium: known numbers from Redis drawn as charts and figures,
the empty state, and live numbers from the real streaming job fed through the API."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from api.app import wall_clock_ms
from api.browse import BrowseCatalog
from state.keys import KeyKind
from state.metrics import experiment_field, format_value, metric_field
from state.store import HashWrite
from state.writes import experiment_writes
from transforms.experiments import ExperimentRecord, assign, parse_experiment
from transforms.livemetrics import MINUTE_MS

from .conftest import API_KEY, NOW_MS, put_list
from .test_demo_browser import CATALOG, browser, job  # noqa: F401 - fixtures shared with the demo's browser test

pytestmark = pytest.mark.browser

NOW_MINUTE = NOW_MS - NOW_MS % MINUTE_MS


def severe_messages(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser")]


def text_of(driver, element_id: str) -> str:
    return driver.execute_script("return document.getElementById(arguments[0]).textContent", element_id)


def points(driver, chart_id: str) -> list[dict]:
    """The drawn points of a chart: ``[{"label", "x", "y"}]`` (read in one script call: the page redraws as it polls)."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#' + arguments[0] + ' circle.point')]"
        ".map(c => ({label: c.parentNode.dataset.label, x: Number(c.dataset.x), y: Number(c.dataset.y)}))",
        chart_id,
    )


def test_dashboard_draws_known_numbers(serve, redis_client, store, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    redis_client.hset(f"flowrec:v1:metrics:min:{NOW_MINUTE - MINUTE_MS}", mapping={
        metric_field("shop", "A", "home", "all", "impressions"): 40, metric_field("shop", "A", "home", "all", "clicks"): 4,
        metric_field("shop", "B", "home", "all", "impressions"): 50, metric_field("shop", "B", "home", "all", "clicks"): 10,
        metric_field("shop", "B", "home", "all", "purchases"): 5,
    })
    redis_client.hset(f"flowrec:v1:metrics:min:{NOW_MINUTE}", mapping={metric_field("shop", "A", "home", "all", "impressions"): 10, metric_field("shop", "A", "home", "all", "clicks"): 3})
    store.add_stats({"events": 600, "late_events": 2}, minute_ms=NOW_MINUTE - MINUTE_MS)
    store.set_stats({"last_window_ts": NOW_MS - 700})
    # The experiment as the job applied it, with its attributed totals: the page shows exp's comparison.
    store.write(experiment_writes(ExperimentRecord(parse_experiment({"id": "shop", "variants": {"A": {"share": 0.5}, "B": {"share": 0.5, "preset": "popularity"}}}), NOW_MS - 600_000, NOW_MS - 600_000)))
    totals = {("A", "all", "impressions"): 50, ("A", "all", "clicks"): 7, ("B", "all", "impressions"): 50, ("B", "all", "clicks"): 10}
    store.write([HashWrite(KeyKind.METRICS_EXPERIMENT, "shop", {experiment_field(*k): format_value(v) for k, v in totals.items()})])
    base = serve()
    browser.get(f"{base}/dashboard?minutes=15")
    WebDriverWait(browser, 15, poll_frequency=0.1).until(lambda d: text_of(d, "fig-impressions") == "100")
    assert text_of(browser, "fig-clicks") == "17"
    assert text_of(browser, "fig-ctr") == "17.0%"
    assert text_of(browser, "fig-conversion") == "5.00%"  # two decimals below 10%
    assert text_of(browser, "fig-freshness") == "700 ms"
    assert text_of(browser, "fig-late") == "2"
    assert browser.execute_script("return document.getElementById('empty').hidden") is True

    ctr = points(browser, "chart-ctr")
    assert sorted((p["label"], p["x"], round(p["y"], 6)) for p in ctr) == [
        ("shop/A · home", NOW_MINUTE - MINUTE_MS, 0.1),
        ("shop/A · home", NOW_MINUTE, 0.3),
        ("shop/B · home", NOW_MINUTE - MINUTE_MS, 0.2),  # B showed nothing this minute: no point, not a 0
    ]
    legend = browser.execute_script("return [...document.querySelectorAll('#chart-ctr .legend li')].map(li => li.textContent)")
    assert legend == ["shop/A · home", "shop/B · home"]
    assert {(p["label"], p["y"]) for p in points(browser, "chart-conversion")} >= {("shop/B · home", 0.1)}
    assert [p["y"] for p in points(browser, "chart-events") if p["x"] == NOW_MINUTE - MINUTE_MS] == [10]  # 600 in a minute
    rows = browser.execute_script("return [...document.querySelectorAll('#variant-table tbody tr')].map(tr => [...tr.cells].map(td => td.textContent))")
    assert ["shop", "B", "all", "50", "10", "20.0%", "0", "5", "10.0%", "0", "–"] in rows
    # The chart's accessible name and description say what it shows.
    assert browser.execute_script("return document.getElementById('chart-ctr-title').textContent").startswith("Click-through rate")
    assert "shop/A · home: 30.0%" in browser.execute_script("return document.getElementById('chart-ctr-desc').textContent")

    WebDriverWait(browser, 10, poll_frequency=0.1).until(lambda d: d.execute_script("return !document.getElementById('experiments').hidden"))
    experiment_rows = browser.execute_script("return [...document.querySelectorAll('#experiment-results tbody tr')].map(tr => tr.dataset.variant)")
    assert experiment_rows == ["A", "B"]
    verdict = text_of(browser, "experiment-results")
    assert "shop (running)" in verdict and "not yet significant" in verdict and "z-test" in verdict
    assert "+42.9%" in verdict  # B's CTR lift over the control A: 0.2 / 0.14 - 1

    # Choosing "all contexts summed" redraws the rate charts per variant.
    browser.execute_script("const s = document.getElementById('context'); s.value = 'all'; s.dispatchEvent(new Event('change'))")
    WebDriverWait(browser, 5, poll_frequency=0.1).until(lambda d: {p["label"] for p in points(d, "chart-ctr")} == {"shop/A", "shop/B"})
    assert severe_messages(browser) == []


def test_dashboard_says_when_nothing_was_shown_yet(serve, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{serve()}/dashboard")
    WebDriverWait(browser, 15, poll_frequency=0.1).until(lambda d: d.execute_script("return document.body.dataset.updated") is not None)
    assert browser.execute_script("return document.getElementById('empty').hidden") is False
    assert "No impressions yet" in text_of(browser, "empty")
    assert "no impressions yet" in text_of(browser, "chart-ctr")
    assert points(browser, "chart-ctr") == [] and points(browser, "chart-events") == []
    assert text_of(browser, "fig-impressions") == "0" and text_of(browser, "fig-ctr") == "–"
    assert severe_messages(browser) == []


@pytest.mark.flink
def test_dashboard_shows_live_numbers_from_the_real_job(serve, store, job, browser):
    """Impressions and a click go through the API to the real job; the dashboard shows the attributed counts."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    # Live: the API runs on the wall clock, as the job's sink does (its per-minute counters are minutes of it).
    now = wall_clock_ms()
    put_list(store, KeyKind.USER_RECS, "u1", now - 60_000, [("i1", 0.9), ("i2", 0.5), ("i4", 0.3)])
    base = serve(catalog=BrowseCatalog(CATALOG), clock_ms=wall_clock_ms)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=base, timeout=10, headers=auth) as api:
        shown = api.get("/v1/users/u1/recommendations", params={"n": 3}).json()
        items = [entry["item"] for entry in shown["items"]]
        assert items == ["i1", "i2", "i4"] and shown["rec_id"]
        # Stamped when sent (starting the API may take seconds under load, and older events would be
        # late), in one request: one spool file, so the job reads the impression before the click.
        sent = wall_clock_ms()
        impression = {"user_id": "u1", "event_type": "impression", "rec_id": shown["rec_id"], "items": items, "positions": [0, 1, 2], "ts": sent}
        click = {"user_id": "u1", "item_id": "i2", "event_type": "click", "rec_id": shown["rec_id"], "position": 1, "ts": sent + 1}
        response = api.post("/v1/events", json=[impression, click])
        assert response.status_code == 202 and response.json()["accepted"] == 2, response.text

    browser.get(f"{base}/dashboard")
    wait = WebDriverWait(browser, 90, poll_frequency=0.2)
    try:
        wait.until(lambda d: text_of(d, "fig-impressions") == "3" and text_of(d, "fig-clicks") == "1")
    except TimeoutException:
        live = httpx.get(f"{base}/v1/metrics/live", params={"minutes": 5}).json()
        shown_now = (text_of(browser, "fig-impressions"), text_of(browser, "fig-clicks"), text_of(browser, "status"))
        pytest.fail(f"the dashboard showed {shown_now}; /v1/metrics/live: series {live['series']}, ops {live['ops']}")
    assert text_of(browser, "fig-ctr") == "33.3%"
    ctr = points(browser, "chart-ctr")
    assert ctr and {p["label"] for p in ctr} == {"no experiment · home"}
    assert max(p["y"] for p in ctr) == pytest.approx(1 / 3)
    # The job's own numbers are live too: it processed events in the minutes shown (not necessarily in the current one).
    wait.until(lambda d: any(p["y"] > 0 for p in points(d, "chart-events")))
    assert severe_messages(browser) == []


@pytest.mark.flink
def test_dashboard_charts_each_variant_of_an_experiment_the_real_job_runs(serve, store, job, browser):
    """An experiment started through the API: the job scores each user with their variant, the lists'
    rec_ids name it, and the dashboard draws a line per variant and shows the experiment's table."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    declaration = {"id": "shop", "variants": {"control": {"share": 0.5, "preset": "popularity"}, "treatment": {"share": 0.5}}}
    experiment = parse_experiment(declaration)
    # One shopper in each variant (assignment is a stable hash of the user id).
    shoppers: dict[str, str] = {}
    for k in range(1, 200):
        shoppers.setdefault(assign(experiment, f"u{k}"), f"u{k}")
        if len(shoppers) == 2:
            break
    base = serve(catalog=BrowseCatalog(CATALOG), clock_ms=wall_clock_ms)

    def until(condition, what: str, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.3)

    def labelled(user: str) -> bool:
        raw = store.get_many([(KeyKind.USER_RECS, user)])[0]
        return raw is not None and orjson.loads(raw).get("experiment") == "shop"

    with httpx.Client(base_url=base, timeout=10, headers={"Authorization": f"Bearer {API_KEY}"}) as api:
        assert api.post("/v1/experiments", json=declaration).status_code == 202
        until(lambda: api.get("/v1/experiments").json()["experiments"], "the job did not apply the experiment")
        for user in shoppers.values():
            views = [{"user_id": user, "item_id": item, "event_type": "view", "ts": wall_clock_ms()} for item in ("i3", "i5")]
            assert api.post("/v1/events", json=views).status_code == 202
        until(lambda: all(labelled(user) for user in shoppers.values()), "the job wrote no list labelled with a variant")
        for variant, user in shoppers.items():
            shown = api.get(f"/v1/users/{user}/recommendations", params={"n": 2}).json()
            items = [entry["item"] for entry in shown["items"]]
            assert items, shown
            now = wall_clock_ms()
            records = [
                {"user_id": user, "event_type": "impression", "rec_id": shown["rec_id"], "items": items, "positions": list(range(len(items))), "ts": now},
                {"user_id": user, "item_id": items[0], "event_type": "click", "rec_id": shown["rec_id"], "position": 0, "ts": now + 1},
            ]
            assert api.post("/v1/events", json=records).status_code == 202

    browser.get(f"{base}/dashboard?experiment=shop")
    try:
        WebDriverWait(browser, 90, poll_frequency=0.3).until(lambda d: {p["label"] for p in points(d, "chart-ctr")} == {"control · home", "treatment · home"})
    except TimeoutException:
        live = httpx.get(f"{base}/v1/metrics/live", params={"minutes": 5}).json()
        pytest.fail(f"the CTR chart has {points(browser, 'chart-ctr')}; /v1/metrics/live series: {live['series']}")
    assert all(p["y"] > 0 for p in points(browser, "chart-ctr"))  # each shopper clicked one of the items shown
    WebDriverWait(browser, 30, poll_frequency=0.3).until(
        lambda d: d.execute_script("return [...document.querySelectorAll('#experiment-results tbody tr')].map(tr => tr.dataset.variant)") == ["control", "treatment"]
    )
    assert "shop (running)" in text_of(browser, "experiment-results")
    assert severe_messages(browser) == []
