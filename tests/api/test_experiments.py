"""The experiments API over real HTTP against a real Redis: declarations checked with the job's rules and
queued through the catalog spool, results read from what the job wrote (records and attributed counts),
and each user's variant for request-time lists."""

from __future__ import annotations

import asyncio

import pytest

from api.experiments import ExperimentDirectory
from state.experiments import kept_settings_stats, read_experiment_records, read_kept_settings
from state.keys import KeyKind
from state.metrics import experiment_field, format_value
from state.store import HashWrite
from state.writes import experiment_writes
from transforms.config import ModelConfig
from transforms.experiments import ExperimentRecord, assign, compare, parse_experiment, validate_experiment_control, wilson_interval

from .conftest import NOW_MS, assert_problem
from .test_ingest import lines, spool_files

DECLARATION = {
    "id": "ranker-1",
    "salt": "s1",
    "variants": {"control": {"share": 0.5, "preset": "popularity"}, "treatment": {"share": 0.5, "config": {"weight_content": 0.6}}},
}


def job_applied(store, declaration=DECLARATION, started_ms=NOW_MS - 60_000, stopped_ms=None) -> ExperimentRecord:
    """Write an experiment record as the job does when it applies a start (and a stop)."""
    record = ExperimentRecord(parse_experiment(declaration), started_ms, started_ms, stopped_ms)
    store.write(experiment_writes(record))
    return record


def job_counted(store, experiment: str, counts: dict[tuple[str, str, str], float]) -> None:
    """Attributed totals as the job's metrics aggregator writes them (HSET of absolute values)."""
    store.write([HashWrite(KeyKind.METRICS_EXPERIMENT, experiment, {experiment_field(*key): format_value(v) for key, v in counts.items()})])


def test_start_is_checked_and_queued_on_the_catalog_spool(api, auth, spool_dir, clock):
    response = api.post("/v1/experiments", json=DECLARATION, headers=auth)
    assert response.status_code == 202, response.text
    assert response.json() == {"id": "ranker-1", "queued": "start", "ts": NOW_MS, "experiment": parse_experiment(DECLARATION).to_dict()}
    [path] = spool_files(spool_dir, "catalog")
    [record] = lines(path)
    # The job's own parser accepts what the API queued.
    control, rejection = validate_experiment_control(record)
    assert rejection is None and control.experiment == parse_experiment(DECLARATION) and control.ts == NOW_MS


@pytest.mark.parametrize(
    "declaration, problem",
    [
        ({**DECLARATION, "owner": "me"}, "unknown experiment fields: ['owner']"),
        ({**DECLARATION, "variants": {"a": {"share": 0.5}, "b": {"share": 0.4}}}, "shares must sum to 1"),
        ({**DECLARATION, "variants": {"a": {"share": 1.0}}}, "needs 2-16 variants"),
        ({**DECLARATION, "variants": {"a": {"share": 0.5}, "b": {"share": 0.5, "config": {"weight_cff": 1}}}}, "unknown model settings: ['weight_cff']"),
        ({**DECLARATION, "variants": {"a": {"share": 0.5}, "b": {"share": 0.5, "config": {"neighbours": 10}}}}, "['neighbours'] cannot differ between variants"),
        ({**DECLARATION, "variants": {"a": {"share": 0.5}, "b": {"share": 0.5, "config": {"similarity": "swing"}}}}, "similarity must be one of"),
        ([DECLARATION], "must be a JSON object"),
    ],
)
def test_bad_declarations_are_422_naming_the_problem(api, auth, spool_dir, declaration, problem):
    doc = assert_problem(api.post("/v1/experiments", json=declaration, headers=auth), 422, "bad-experiment")
    assert problem in doc["detail"]
    assert spool_files(spool_dir, "catalog") == []


def test_a_half_life_or_similarity_the_job_keeps_no_state_for_is_422_once_the_job_said_what_it_keeps(api, auth, spool_dir, store):
    treatment = {"share": 0.5, "config": {"half_life_ms": 3_600_000, "similarity": "jaccard"}}
    declaration = {**DECLARATION, "variants": {"control": {"share": 0.5}, "treatment": treatment}}
    # No job has recorded its settings yet: queued, the job decides when it applies it.
    assert api.post("/v1/experiments", json=declaration, headers=auth).status_code == 202
    assert len(spool_files(spool_dir, "catalog")) == 1
    # A job keeping neither (as pipelines.main records at start-up): refused before queueing.
    store.set_stats(kept_settings_stats(ModelConfig()))
    doc = assert_problem(api.post("/v1/experiments", json=declaration, headers=auth), 422, "experiment-unsupported")
    assert "half_life_ms 3600000 is not kept by the job" in doc["detail"] and "variant_half_lives_ms" in doc["detail"]
    assert len(spool_files(spool_dir, "catalog")) == 1
    # A job keeping both: queued.
    store.set_stats(kept_settings_stats(ModelConfig(variant_half_lives_ms=(3_600_000, 600_000), variant_similarities=("jaccard",))))
    assert read_kept_settings(store.client, store.namespace).variant_half_lives_ms == (3_600_000, 600_000)
    assert api.post("/v1/experiments", json=declaration, headers=auth).status_code == 202
    assert len(spool_files(spool_dir, "catalog")) == 2


def test_start_needs_a_key_and_json(api, auth, spool_dir):
    assert_problem(api.post("/v1/experiments", json=DECLARATION), 401, "unauthorized")
    assert_problem(api.post("/v1/experiments", content=b"{nope", headers={**auth, "Content-Type": "application/json"}), 400, "bad-json")
    assert_problem(api.post("/v1/experiments", content=b"{}", headers={**auth, "Content-Type": "text/plain"}), 415, "unsupported-media-type")
    assert spool_files(spool_dir, "catalog") == []


def test_another_start_while_one_runs_is_409_and_a_change_is_queued(api, auth, spool_dir, store):
    job_applied(store)
    other = {**DECLARATION, "id": "other"}
    doc = assert_problem(api.post("/v1/experiments", json=other, headers=auth), 409, "experiment-running")
    assert "'ranker-1' is running" in doc["detail"]
    changed = {**DECLARATION, "variants": {"control": {"share": 0.2}, "treatment": {"share": 0.8}}}
    response = api.post("/v1/experiments", json=changed, headers=auth)
    assert response.status_code == 202 and response.json()["queued"] == "change"
    assert len(spool_files(spool_dir, "catalog")) == 1


def test_stop(api, auth, spool_dir, store):
    assert_problem(api.delete("/v1/experiments/ranker-1", headers=auth), 404, "unknown-experiment")
    assert_problem(api.delete("/v1/experiments/ranker-1"), 401, "unauthorized")
    job_applied(store)
    response = api.delete("/v1/experiments/ranker-1", headers=auth)
    assert response.status_code == 202 and response.json() == {"id": "ranker-1", "queued": "stop", "ts": NOW_MS}
    [path] = spool_files(spool_dir, "catalog")
    assert lines(path) == [{"experiment_stop": "ranker-1", "ts": NOW_MS}]
    job_applied(store, stopped_ms=NOW_MS - 1000)
    assert_problem(api.delete("/v1/experiments/ranker-1", headers=auth), 409, "experiment-not-running")
    assert_problem(api.delete("/v1/experiments/a.b", headers=auth), 422, "validation")


def test_list(api, store):
    assert api.get("/v1/experiments").json() == {"experiments": []}
    job_applied(store, {**DECLARATION, "id": "old"}, started_ms=NOW_MS - 9_000_000, stopped_ms=NOW_MS - 8_000_000)
    job_applied(store)
    listed = api.get("/v1/experiments").json()["experiments"]
    assert [(e["id"], e["status"]) for e in listed] == [("ranker-1", "running"), ("old", "stopped")]
    assert listed[0]["control"] == "control" and set(listed[0]["variants"]) == {"control", "treatment"}


def test_results_per_variant_with_intervals_lift_and_p_value(api, store):
    job_applied(store)
    job_counted(
        store,
        "ranker-1",
        {
            ("control", "all", "impressions"): 10_000,
            ("control", "all", "clicks"): 300,
            ("control", "all", "purchases"): 20,
            ("control", "home", "impressions"): 10_000,
            ("control", "home", "clicks"): 300,
            ("treatment", "all", "impressions"): 10_000,
            ("treatment", "all", "clicks"): 450,
            ("treatment", "all", "purchases"): 40,
            ("treatment", "all", "revenue"): 123.5,
            ("treatment", "home", "impressions"): 8_000,
            ("treatment", "home", "clicks"): 400,
            ("treatment", "item", "impressions"): 2_000,
            ("treatment", "item", "clicks"): 50,
        },
    )
    doc = api.get("/v1/experiments/ranker-1").json()
    assert doc["id"] == "ranker-1" and doc["status"] == "running" and doc["experiment"] == parse_experiment(DECLARATION).to_dict()
    assert doc["control"] == "control" and "two-proportion z-test" in doc["test"] and "Wilson" in doc["interval"]
    treatment = doc["variants"]["treatment"]
    assert (treatment["impressions"], treatment["clicks"], treatment["purchases"], treatment["revenue"]) == (10_000, 450, 40, 123.5)
    assert treatment["share"] == 0.5
    assert treatment["ctr"] == 0.045 and treatment["ctr_ci"] == pytest.approx(list(wilson_interval(450, 10_000)))
    assert treatment["conversion"] == 0.004
    assert treatment["lift"] == pytest.approx(0.5)
    from transforms.experiments import VariantCounts

    expected = compare(["control", "treatment"], "control", {"control": VariantCounts(10_000, 300, 0, 20), "treatment": VariantCounts(10_000, 450, 0, 40)})
    assert treatment["p_value"] == pytest.approx(expected.variants[1].p_value) and treatment["p_value"] < 1e-6
    assert doc["winner"] == "treatment" and doc["verdict"].startswith("treatment wins")
    assert treatment["contexts"]["home"]["ctr"] == 0.05 and treatment["contexts"]["item"]["clicks"] == 50
    assert doc["variants"]["control"]["verdict"] == "control" and doc["variants"]["control"]["p_value"] is None


def test_results_before_any_impression_say_not_yet_significant(api, store):
    job_applied(store)
    doc = api.get("/v1/experiments/ranker-1").json()
    assert doc["winner"] is None and doc["verdict"].startswith("not yet significant at 95%")
    assert doc["variants"]["treatment"]["verdict"] == "no impressions yet"
    assert_problem(api.get("/v1/experiments/nope"), 404, "unknown-experiment")
    assert_problem(api.get("/v1/experiments/no%20pe"), 422, "validation")


def test_variant_of_follows_the_running_experiment_with_a_short_cache(store, clock):
    directory = ExperimentDirectory(lambda: read_experiment_records(store.client, store.namespace), clock, cache_ms=1000)

    async def variants(users, context=None):
        return [await directory.variant_of(u, context) for u in users]

    users = [f"u{k}" for k in range(50)]
    assert asyncio.run(variants(users[:3])) == [("~", "~")] * 3
    record = job_applied(store, {**DECLARATION, "contexts": ["home", "item"]})
    # Cached: the new experiment shows once the cache has aged.
    assert asyncio.run(variants(users[:1])) == [("~", "~")]
    clock.now_ms += 1000
    got = asyncio.run(variants(users))
    assert got == [("ranker-1", assign(record.experiment, u)) for u in users]
    assert {v for _, v in got} == {"control", "treatment"}
    assert asyncio.run(variants(users[:2], "item")) == got[:2]
    assert asyncio.run(variants(users[:2], "search")) == [("~", "~")] * 2  # not a context of the experiment
    job_applied(store, {**DECLARATION, "contexts": ["home", "item"]}, stopped_ms=NOW_MS)
    clock.now_ms += 1000
    assert asyncio.run(variants(users[:2])) == [("~", "~")] * 2
