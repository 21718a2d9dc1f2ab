"""An A/B experiment inside the one job: started, refused, stopped, another started and changed through
control records on the catalog input, without a restart; Redis ends equal to the reference engine given
the same controls (parallelism 1 and 2), lists naming the variant that computed them; a variant with a
half-life and a similarity of its own among those the job keeps, and one it does not keep refused."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
import redis

from flowrec.config import Settings
from pipelines.sources import CollectionSource, pack_chunks
from state.store import decode_list
from tests.pipelines.jobkit import catalog_lines, differences, event_lines, reference_content, results, run_job
from tests.pipelines.test_job import small_shop
from transforms.config import ModelConfig
from transforms.experiments import ExperimentRecord, ExperimentStart, ExperimentStop, assign, parse_experiment

pytestmark = pytest.mark.flink

FIRST = {"id": "first", "variants": {"control": {"share": 0.5}, "pop": {"share": 0.5, "preset": "popularity"}}}
SECOND = {"id": "second", "salt": "s2", "variants": {"control": {"share": 0.5, "preset": "popularity"}, "treatment": {"share": 0.5}}}
# The change moves the treatment to a half-life and a similarity of their own, among those the job keeps.
TREATMENT = {"weight_content": 0.9, "top_n": 8, "half_life_ms": 7_200_000, "similarity": "jaccard"}
SECOND_CHANGED = {**SECOND, "variants": {"control": {"share": 0.3, "preset": "popularity"}, "treatment": {"share": 0.7, "config": TREATMENT}}}
# A half-life the job keeps no sums for: refused when applied (dead letter), nothing changes.
UNKEPT = {**SECOND, "variants": {"control": {"share": 0.5}, "treatment": {"share": 0.5, "config": {"half_life_ms": 60_000}}}}
KEEPING = ModelConfig(variant_half_lives_ms=(7_200_000,), variant_similarities=("jaccard", "lift"))


@pytest.mark.parametrize("parallelism", [1, 2])
def test_job_runs_experiments_like_the_reference(parallelism, redis_url):
    events, catalog = small_shop()
    at = [int(t) for t in np.quantile(events.ts, [0.1, 0.2, 0.4, 0.5, 0.7])]
    controls = [
        ExperimentStart(parse_experiment(FIRST), at[0]),
        ExperimentStart(parse_experiment(SECOND), at[1]),  # refused: "first" is running
        ExperimentStop("first", at[2]),
        ExperimentStart(parse_experiment(UNKEPT), (at[2] + at[3]) // 2),  # refused: half-life not kept
        ExperimentStart(parse_experiment(SECOND), at[3]),
        ExperimentStart(parse_experiment(SECOND_CHANGED), at[4]),
    ]
    bad = orjson.dumps({"experiment": {**FIRST, "variants": {"a": {"share": 0.5}, "b": {"share": 0.6}}}, "ts": at[2]}).decode()
    lines = catalog_lines(catalog) + [orjson.dumps(c.to_dict()).decode() for c in controls] + [bad]
    lines.sort(key=lambda line: orjson.loads(line)["ts"])
    settings = Settings(parallelism=parallelism, restart_attempts=0, model=KEEPING)
    run_job(CollectionSource(list(pack_chunks(event_lines(events), 200)), list(pack_chunks(lines, 50))), settings, redis_url)
    job = results(redis_url)

    reference = reference_content(events, catalog, settings, experiments=controls)
    assert differences(job, reference) == []
    # The experiments shaped the lists, the treatment's own half-life and similarity too.
    assert differences(job, reference_content(events, catalog, settings)) != []
    same_state = {**SECOND_CHANGED, "variants": {**SECOND_CHANGED["variants"], "treatment": {"share": 0.7, "config": {"weight_content": 0.9, "top_n": 8}}}}
    shared_state = controls[:-1] + [ExperimentStart(parse_experiment(same_state), at[4])]
    assert differences(job, reference_content(events, catalog, settings, experiments=shared_state)) != []
    # Both experiments are recorded; the second changed once and still runs.
    assert orjson.loads(job[b"flowrec:v1:experiments"]) == ["first", "second"]
    first = ExperimentRecord.from_dict(orjson.loads(job[b"flowrec:v1:experiment:first"]))
    second = ExperimentRecord.from_dict(orjson.loads(job[b"flowrec:v1:experiment:second"]))
    window = settings.model.window_ms
    assert (first.started_ms, first.stopped_ms) == ((at[0] // window + 1) * window, (at[2] // window + 1) * window)
    assert second.running and second.experiment == parse_experiment(SECOND_CHANGED) and second.updated_ms > second.started_ms
    # Lists scored since the change name the variant that computed them, and both variants have users.
    labels = {}
    for key, raw in job.items():
        if key.startswith(b"flowrec:v1:rec:"):
            ts, _, extra = decode_list(raw)
            user = key.decode().split(":", 3)[3]
            if ts > at[4]:
                assert (extra["experiment"], extra["variant"]) == ("second", assign(second.experiment, user))
                labels[extra["variant"]] = labels.get(extra["variant"], 0) + 1
    assert set(labels) == {"control", "treatment"}
    # The refused start and the bad declaration are dead letters with their reasons.
    client = redis.Redis.from_url(redis_url)
    reasons = [orjson.loads(fields[b"record"])["reason"] for _, fields in client.xrange("flowrec:v1:deadletter")]
    assert sorted(reasons) == ["bad_experiment", "experiment_conflict", "experiment_unsupported"]
