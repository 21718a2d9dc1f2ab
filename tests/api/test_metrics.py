"""Prometheus exposition: counts and latency histograms per route template, never per raw path."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from state.keys import KeyKind

from .conftest import put_list


def samples(api) -> dict[tuple[str, tuple], float]:
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_requests_are_counted_by_route_template(api, store, auth):
    put_list(store, KeyKind.USER_RECS, "alice", 1, [("i1", 1.0)])
    api.get("/v1/users/alice/recommendations")  # shortcut path
    api.get("/v1/users/bob/recommendations", params={"context": "cart"})  # full route
    api.get("/v1/users/b*b/recommendations")  # 422
    api.get("/v1/no/such/route/for/carol")  # 404
    api.post("/v1/events", json={"user_id": "u1", "item_id": "i1", "event_type": "click"}, headers=auth)
    got = samples(api)
    route = "/v1/users/{user_id}/recommendations"
    assert got[("flowrec_api_requests_total", (("method", "GET"), ("route", route), ("status", "200")))] == 2
    assert got[("flowrec_api_requests_total", (("method", "GET"), ("route", route), ("status", "422")))] == 1
    assert got[("flowrec_api_requests_total", (("method", "GET"), ("route", "<unmatched>"), ("status", "404")))] == 1
    assert got[("flowrec_api_requests_total", (("method", "POST"), ("route", "/v1/events"), ("status", "202")))] == 1
    assert got[("flowrec_api_request_duration_seconds_count", (("method", "GET"), ("route", route)))] == 3
    buckets = [v for (name, labels), v in got.items() if name == "flowrec_api_request_duration_seconds_bucket" and ("route", route) in labels]
    assert len(buckets) > 5 and max(buckets) == 3
    assert got[("flowrec_api_ingested_records_total", (("kind", "event"), ("outcome", "accepted")))] == 1
    # No raw path or user id leaks into a label value.
    text = api.get("/metrics").text
    for raw in ("alice", "bob", "carol", "b*b"):
        assert raw not in text


def test_attribution_counters_come_from_the_jobs_experiment_totals(api, store):
    from state.metrics import experiment_field
    from state.store import HashWrite

    assert not [k for k in samples(api) if k[0].startswith("flowrec_rec_")]  # nothing counted yet: no series
    store.write(
        [
            HashWrite(KeyKind.METRICS_EXPERIMENT, "exp1", {
                experiment_field("control", "home", "impressions"): "40",
                experiment_field("control", "home", "clicks"): "4",
                experiment_field("control", "all", "clicks"): "4",  # a sum: not exposed
                experiment_field("treatment", "ads", "purchases"): "2",
                experiment_field("treatment", "ads", "revenue"): "19.5",
            }),
            HashWrite(KeyKind.METRICS_EXPERIMENT, "~", {experiment_field("~", "home", "impressions"): "7"}),
            HashWrite(KeyKind.METRICS_EXPERIMENTS, None, {"exp1": "1", "~": "1"}),
        ]
    )
    got = {k: v for k, v in samples(api).items() if k[0].startswith("flowrec_rec_")}

    def labels(experiment, variant, context):
        return (("context", context), ("experiment", experiment), ("variant", variant))

    assert got == {
        ("flowrec_rec_impressions_total", labels("exp1", "control", "home")): 40,
        ("flowrec_rec_clicks_total", labels("exp1", "control", "home")): 4,
        ("flowrec_rec_purchases_total", labels("exp1", "treatment", "ads")): 2,
        ("flowrec_rec_revenue_total", labels("exp1", "treatment", "ads")): 19.5,
        ("flowrec_rec_impressions_total", labels("~", "~", "home")): 7,
    }
    assert ("flowrec_api_requests_total", (("method", "GET"), ("route", "/metrics"), ("status", "200"))) in samples(api)  # the API's own series stay


def test_metrics_still_served_when_the_attribution_read_fails(redis_url):
    import redis

    from api.recmetrics import attribution_exposition

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    assert attribution_exposition(dead, "flowrec", 0) == b""


def test_campaign_counters_come_from_todays_ads_hash(api, store, clock):
    from state.metrics import ads_field, day_start
    from state.store import HashWrite

    today, yesterday = day_start(clock.now_ms), day_start(clock.now_ms) - 86_400_000
    assert not [k for k in samples(api) if k[0].startswith("flowrec_campaign_")]  # nothing counted yet: no series
    store.write(
        [
            HashWrite(KeyKind.METRICS_ADS, str(today), {
                ads_field("c1", "campaign_impressions"): "30",
                ads_field("c1", "campaign_clicks"): "3",
                ads_field("c1", "spend"): "1.5",
                ads_field("~", "campaign_clicks"): "1",
                ads_field("sku1", "impressions"): "30",  # per item: not a campaign series
                ads_field("sku1", "clicks"): "3",
            }),
            HashWrite(KeyKind.METRICS_ADS, str(yesterday), {ads_field("c2", "spend"): "9"}),
        ]
    )
    got = {k: v for k, v in samples(api).items() if k[0].startswith("flowrec_campaign_")}
    assert got == {
        ("flowrec_campaign_impressions_total", (("campaign", "c1"),)): 30,
        ("flowrec_campaign_clicks_total", (("campaign", "c1"),)): 3,
        ("flowrec_campaign_clicks_total", (("campaign", "~"),)): 1,
        ("flowrec_campaign_spend_total", (("campaign", "c1"),)): 1.5,
    }
    # At midnight UTC the series start again from the new day's hash.
    clock.now_ms = yesterday + 5
    got = {k: v for k, v in samples(api).items() if k[0].startswith("flowrec_campaign_")}
    assert got == {("flowrec_campaign_spend_total", (("campaign", "c2"),)): 9}
