"""Experiments: strict declarations, stable assignment within the declared shares, control records,
per-variant scoring, and the statistics (checked against values computed by hand)."""

from __future__ import annotations

import dataclasses
import math
import random
import re

import numpy as np
import pytest

from tests.transforms.test_profile import random_events, run
from tests.transforms.test_scoring_batch import CONFIG, random_model, random_profile
from transforms.config import ModelConfig
from transforms.experiments import (
    SCORING_FIELDS,
    ExperimentError,
    ExperimentRecord,
    ExperimentStart,
    ExperimentStop,
    VariantCounts,
    apply_control,
    assign,
    assignment_point,
    compare,
    control_order,
    parse_experiment,
    score_by_variant,
    two_proportion_p_value,
    unsupported,
    validate_experiment_control,
    wilson_interval,
)
from transforms.recid import CONTEXTS
from transforms.scoring import score_users

DECLARATION = {
    "id": "ranker-1",
    "salt": "s1",
    "variants": {"control": {"share": 0.5, "preset": "popularity"}, "treatment": {"share": 0.5, "config": {"weight_content": 0.6, "top_n": 5}}},
}


def declaration(**changes):
    return {**DECLARATION, **changes}


def test_parse_keeps_the_declaration():
    experiment = parse_experiment(DECLARATION)
    assert experiment.id == "ranker-1" and experiment.salt == "s1" and experiment.contexts == CONTEXTS
    assert [v.name for v in experiment.variants] == ["control", "treatment"]
    assert experiment.control == "control"
    assert parse_experiment(experiment.to_dict()) == experiment
    # The salt defaults to the id; without a variant named control, the first is the control.
    other = parse_experiment({"id": "e", "variants": {"b": {"share": 0.25}, "a": {"share": 0.75}}})
    assert other.salt == "e" and other.control == "b"


def test_variant_configs():
    base = ModelConfig(weight_cf=0.8, half_life_ms=5_000)
    configs = parse_experiment(DECLARATION).configs(base)
    popularity = configs["control"]
    assert (popularity.weight_popularity, popularity.weight_cf, popularity.weight_content, popularity.weight_category, popularity.weight_recent) == (1.0, 0, 0, 0, 0)
    assert (popularity.weight_embedding, popularity.weight_sequence) == (0, 0)
    assert configs["treatment"] == base.replace(weight_content=0.6, top_n=5)
    assert configs["treatment"].half_life_ms == 5_000
    # A preset with config on top; lists become the tuples ModelConfig holds.
    experiment = parse_experiment(declaration(variants={"a": {"share": 0.5, "preset": "popularity", "config": {"top_n": 3}}, "b": {"share": 0.5, "config": {"deny_categories": ["toys"]}}}))
    assert experiment.configs(base)["a"].top_n == 3 and experiment.configs(base)["a"].weight_popularity == 1.0
    assert experiment.configs(base)["b"].deny_categories == ("toys",)


@pytest.mark.parametrize(
    "data, problem",
    [
        ("nope", "must be a JSON object"),
        (declaration(owner="me"), "unknown experiment fields: ['owner']"),
        (declaration(id="has space"), "id must be"),
        (declaration(id=""), "id must be"),
        (declaration(salt=""), "salt must be"),
        (declaration(variants={"only": {"share": 1.0}}), "needs 2-16 variants, got 1"),
        (declaration(variants=[]), "variants must be an object"),
        (declaration(variants={"a": {"share": 0.5}, "b b": {"share": 0.5}}), "variant name must be"),
        (declaration(variants={"a": {"share": 0.5}, "b": {"share": 0.4}}), "shares must sum to 1"),
        (declaration(variants={"a": {"share": 0.5}, "b": {"share": 0.5 + 1e-6}}), "shares must sum to 1"),
        (declaration(variants={"a": {"share": 1.0}, "b": {"share": 0}}), "share must be a number in (0, 1]"),
        (declaration(variants={"a": {"share": 0.5}, "b": {"share": True}}), "share must be a number"),
        (declaration(variants={"a": {"share": 0.5}, "b": {"share": 0.5, "weight": 1}}), "unknown fields ['weight']"),
        (declaration(variants={"a": {"share": 0.5}, "b": {"share": 0.5, "preset": "magic"}}), "unknown preset 'magic'"),
        (declaration(variants={"a": {"share": 0.5}, "b": {"share": 0.5, "config": {"wieght_cf": 1}}}), "unknown model settings: ['wieght_cf']"),
        (declaration(variants={"a": {"share": 0.5}, "b": {"share": 0.5, "config": {"weight_cf": "high"}}}), "weight_cf must be a finite number >= 0"),
        (declaration(variants={"a": {"share": 0.5}, "b": {"share": 0.5, "config": {"weight_cf": -1}}}), "weight_cf must be a finite number >= 0"),
        (declaration(variants={"a": {"share": 0.5}, "b": {"share": 0.5, "config": {"top_n": 0}}}), "top_n must be > 0"),
        (declaration(variants={"a": {"share": 0.5}, "b": {"share": 0.5, "config": {"exclude_seen": 1}}}), "exclude_seen must be true or false"),
        (declaration(contexts=["home", "checkout"]), "unknown contexts: ['checkout']"),
        (declaration(contexts=[]), "contexts must be a non-empty list"),
    ],
)
def test_bad_declarations_are_refused_naming_the_problem(data, problem):
    with pytest.raises(ExperimentError) as caught:
        parse_experiment(data)
    assert problem in str(caught.value)


def test_settings_that_shape_shared_state_are_refused_by_name():
    variants = {"a": {"share": 0.5}, "b": {"share": 0.5, "config": {"event_weights": {"view": 2.0}, "neighbours": 10, "weight_cf": 1.0}}}
    with pytest.raises(ExperimentError) as caught:
        parse_experiment(declaration(variants=variants))
    message = str(caught.value)
    assert "['event_weights', 'neighbours'] cannot differ between variants" in message
    assert "already weighted by the job's event weights" in message
    # The message lists what a variant may set, the kept state settings included.
    assert "'half_life_ms'" in message and "'similarity'" in message
    # Every scoring field is a real ModelConfig field.
    assert SCORING_FIELDS <= set(ModelConfig().to_dict())


def test_half_life_and_similarity_are_checked_on_their_own_then_against_the_job():
    variants = {"a": {"share": 0.5}, "b": {"share": 0.5, "config": {"half_life_ms": 3_600_000, "similarity": "jaccard"}}}
    experiment = parse_experiment(declaration(variants=variants))
    assert experiment.variant("b").model_config(ModelConfig()).half_life_ms == 3_600_000
    for config, problem in [
        ({"similarity": "swing"}, "similarity must be one of ['cosine', 'jaccard', 'lift', 'conditional']"),
        ({"similarity": 3}, "similarity must be one of"),
        ({"half_life_ms": 0}, "half_life_ms must be > 0"),
        ({"half_life_ms": 1.5}, "half_life_ms must be an integer"),
    ]:
        with pytest.raises(ExperimentError, match=re.escape(problem)):
            parse_experiment(declaration(variants={"a": {"share": 0.5}, "b": {"share": 0.5, "config": config}}))
    # A job keeping neither: refused, naming the setting to list them in.
    job = ModelConfig()
    why = unsupported(experiment, job)
    assert why is not None and "half_life_ms 3600000 is not kept by the job" in why and "variant_half_lives_ms" in why
    outcome = apply_control(None, ExperimentStart(experiment, 10), 100, job)
    assert outcome.running is None and outcome.stored is None and outcome.rejection.reason == "experiment_unsupported"
    only_half_life = ModelConfig(variant_half_lives_ms=(3_600_000,))
    assert "similarity 'jaccard' is not kept" in unsupported(experiment, only_half_life)
    both = ModelConfig(variant_half_lives_ms=(3_600_000,), variant_similarities=("jaccard", "lift"))
    assert unsupported(experiment, both) is None
    assert apply_control(None, ExperimentStart(experiment, 10), 100, both).running == ExperimentRecord(experiment, 100, 100)
    # The job's own values need nothing kept.
    own = parse_experiment(declaration(variants={"a": {"share": 0.5}, "b": {"share": 0.5, "config": {"half_life_ms": job.half_life_ms, "similarity": job.similarity}}}))
    assert unsupported(own, job) is None


def test_assignment_is_stable_and_within_two_percent_of_the_shares():
    experiment = parse_experiment(declaration(variants={"a": {"share": 0.2}, "b": {"share": 0.5}, "c": {"share": 0.3}}))
    users = [f"user-{k}" for k in range(100_000)]
    counts = {"a": 0, "b": 0, "c": 0}
    first = [assign(experiment, u) for u in users]
    for name in first:
        counts[name] += 1
    for variant in experiment.variants:
        assert abs(counts[variant.name] / len(users) - variant.share) < 0.02 * variant.share
    # Stable: the same answer again, and the point is a pure function of salt and user.
    assert [assign(experiment, u) for u in users[:2000]] == first[:2000]
    assert assignment_point("s1", "user-7") == assignment_point("s1", "user-7")
    assert all(0 <= assignment_point("s1", u) < 1 for u in users[:1000])
    # Another salt reshuffles: about half of a 50/50 split change sides.
    halves = parse_experiment(DECLARATION)
    resalted = parse_experiment(declaration(salt="s2"))
    moved = sum(assign(halves, u) != assign(resalted, u) for u in users[:20_000]) / 20_000
    assert 0.45 < moved < 0.55


def test_control_records():
    start, rejection = validate_experiment_control({"experiment": DECLARATION, "ts": 1000})
    assert rejection is None and start == ExperimentStart(parse_experiment(DECLARATION), 1000)
    stop, rejection = validate_experiment_control({"experiment_stop": "ranker-1", "ts": 2000})
    assert rejection is None and stop == ExperimentStop("ranker-1", 2000)
    assert validate_experiment_control(start.to_dict())[0] == start
    for record, reason, detail in [
        ({"experiment": declaration(variants={"a": {"share": 1.0}}), "ts": 1}, "bad_experiment", "variants"),
        ({"experiment": DECLARATION, "ts": 1, "extra": 1}, "bad_experiment", "only the fields"),
        ({"experiment": DECLARATION}, "bad_timestamp", "ts"),
        ({"experiment_stop": "a b", "ts": 1}, "bad_experiment", "experiment_stop must be"),
    ]:
        control, rejection = validate_experiment_control(record)
        assert control is None and rejection.reason == reason and detail in rejection.detail


def test_apply_control_runs_one_experiment_at_a_time():
    first = parse_experiment(DECLARATION)
    changed = parse_experiment(declaration(variants={"control": {"share": 0.3}, "treatment": {"share": 0.7}}))
    other = parse_experiment(declaration(id="other"))
    started = apply_control(None, ExperimentStart(first, 10), 100, ModelConfig())
    assert started.running == ExperimentRecord(first, 100, 100) and started.stored == started.running and started.rejection is None
    # A change keeps the start time.
    change = apply_control(started.running, ExperimentStart(changed, 20), 200, ModelConfig())
    assert change.running == ExperimentRecord(changed, 100, 200)
    # Another experiment while one runs: refused, the running one stays.
    refused = apply_control(change.running, ExperimentStart(other, 30), 300, ModelConfig())
    assert refused.running == change.running and refused.stored is None
    assert refused.rejection.reason == "experiment_conflict" and "'ranker-1' is running" in refused.rejection.detail
    assert apply_control(change.running, ExperimentStop("other", 30), 300, ModelConfig()).rejection.reason == "experiment_conflict"
    stopped = apply_control(change.running, ExperimentStop("ranker-1", 40), 400, ModelConfig())
    assert stopped.running is None and stopped.stored == ExperimentRecord(changed, 100, 200, 400)
    assert ExperimentRecord.from_dict(stopped.stored.to_dict()) == stopped.stored
    assert apply_control(None, ExperimentStop("ranker-1", 50), 500, ModelConfig()).rejection.detail == "experiment 'ranker-1' is not running"
    # Within a window, controls apply by ts, then arrival.
    a, b, c = ExperimentStop("x", 5), ExperimentStop("y", 3), ExperimentStop("z", 5)
    assert control_order([a, b, c]) == [b, a, c]


def test_score_by_variant_equals_each_variant_scored_alone():
    rng = random.Random(7)
    model = random_model(rng)
    users = [f"u{k}" for k in range(60)]
    profiles = [random_profile(rng, model) for _ in users]
    experiment = parse_experiment(DECLARATION)
    configs = experiment.configs(CONFIG)
    out = score_by_variant(users, profiles, 10_000, model, CONFIG, experiment)
    variants = {assign(experiment, u) for u in users}
    assert variants == {"control", "treatment"}
    for user, profile, lists in zip(users, profiles, out):
        variant = assign(experiment, user)
        alone = score_users([profile], 10_000, model, configs[variant])[0]
        assert lists.home == alone.home and lists.cart == alone.cart
        assert lists.home_from == lists.cart_from == ("ranker-1", variant)
    # The variants really differ (treatment lists hold at most 5 items), and no experiment is the base config.
    assert max(len(lists.home) for user, lists in zip(users, out) if assign(experiment, user) == "treatment") <= 5
    plain = score_by_variant(users, profiles, 10_000, model, CONFIG, None)
    assert plain == score_users(profiles, 10_000, model, CONFIG)
    assert all(lists.home_from == ("~", "~") for lists in plain)


def test_a_variant_with_its_own_half_life_and_similarity_scores_as_a_job_running_with_them():
    rng = random.Random(9)
    model = random_model(rng)
    ids = sorted(model.facts)
    short = 3_600_000
    job = CONFIG.replace(variant_half_lives_ms=(short,), variant_similarities=("jaccard",))
    # The jaccard lists of half the items (the rest keep their main lists, as before the item model refreshed them).
    jaccard = {item: (np.array(rng.sample(ids, 6), dtype=object), np.array(sorted((rng.random() for _ in range(6)), reverse=True))) for item in ids[::2]}
    model.variant_neighbours = {"jaccard": jaccard}
    experiment = parse_experiment(declaration(variants={"control": {"share": 0.5}, "treatment": {"share": 0.5, "config": {"half_life_ms": short, "similarity": "jaccard"}}}))
    assert unsupported(experiment, job) is None
    users = [f"u{k}" for k in range(40)]
    histories = {u: [(ids[int(i[1:]) * 7 % len(ids)], code, t, w) for i, code, t, w in random_events(k, n=40, span_ms=6 * 3_600_000)] for k, u in enumerate(users)}
    now = 6 * 3_600_000 + 1
    kept = [run(histories[u], job)[0] for u in users]
    out = score_by_variant(users, kept, now, model, job, experiment)
    as_job_with_them = dataclasses.replace(model, neighbours={**model.neighbours, **jaccard}, variant_neighbours={})
    treated = 0
    for user, profile, lists in zip(users, kept, out):
        if assign(experiment, user) == "treatment":
            treated += 1
            alone = run(histories[user], CONFIG.replace(half_life_ms=short))[0]
            expected = score_users([alone], now, as_job_with_them, CONFIG.replace(half_life_ms=short))[0]
        else:
            expected = score_users([profile], now, model, job)[0]
        assert lists.home == expected.home and lists.cart == expected.cart
    assert 10 <= treated <= 30
    # The treatment really differs from the control's lists of the same users.
    control_view = score_users(kept, now, model, job)
    assert any(a.home != b.home for user, a, b in zip(users, out, control_view) if assign(experiment, user) == "treatment")


def test_score_by_variant_leaves_lists_outside_its_contexts_to_the_base_config():
    rng = random.Random(8)
    model = random_model(rng)
    users = [f"u{k}" for k in range(40)]
    profiles = [random_profile(rng, model) for _ in users]
    experiment = parse_experiment(declaration(contexts=["home", "item"]))
    configs = experiment.configs(CONFIG)
    base = score_users(profiles, 10_000, model, CONFIG)
    for user, profile, lists, plain in zip(users, profiles, score_by_variant(users, profiles, 10_000, model, CONFIG, experiment), base):
        variant = assign(experiment, user)
        assert lists.home == score_users([profile], 10_000, model, configs[variant])[0].home
        assert lists.cart == plain.cart
        assert lists.home_from == ("ranker-1", variant) and lists.cart_from == ("~", "~")


def test_wilson_interval_by_hand():
    # p = 0.2, n = 100, z = 1.96: centre (0.2 + 0.019208) / 1.038415, half 1.96 * sqrt(0.0016 + 0.00009604) / 1.038415.
    low, high = wilson_interval(20, 100)
    assert low == pytest.approx(0.13339, abs=1e-4) and high == pytest.approx(0.28883, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 0.0)
    low, high = wilson_interval(0, 50)
    assert low == pytest.approx(0.0, abs=1e-12) and 0 < high < 0.08


def test_two_proportion_p_value_by_hand():
    # 60/1000 vs 40/1000: pooled 0.05, se sqrt(0.05 * 0.95 * 0.002) = 0.0097468, z = 2.0520, p = 0.04016.
    assert two_proportion_p_value(60, 1000, 40, 1000) == pytest.approx(0.04016, abs=1e-4)
    assert two_proportion_p_value(40, 1000, 60, 1000) == two_proportion_p_value(60, 1000, 40, 1000)
    assert two_proportion_p_value(50, 1000, 50, 1000) == pytest.approx(1.0)
    assert two_proportion_p_value(0, 100, 0, 100) is None
    assert two_proportion_p_value(1, 0, 1, 10) is None


def test_compare_says_plainly_when_not_yet_significant():
    small = compare(["control", "treatment"], "control", {"control": VariantCounts(100, 5), "treatment": VariantCounts(100, 7)})
    assert small.winner is None
    assert small.verdict.startswith("not yet significant at 95%")
    treatment = small.variants[1]
    assert treatment.verdict.startswith("not yet significant at 95%") and treatment.lift == pytest.approx(0.4)
    assert small.variants[0].verdict == "control" and small.variants[0].p_value is None
    assert "z-test" in small.to_dict()["test"]


def test_compare_names_a_significant_winner():
    counts = {"control": VariantCounts(10_000, 300, purchases=20), "treatment": VariantCounts(10_000, 450, purchases=40)}
    result = compare(["control", "treatment"], "control", counts)
    assert result.winner == "treatment"
    row = result.variants[1]
    assert row.ctr == 0.045 and row.lift == pytest.approx(0.5) and row.p_value < 1e-6
    assert row.conversion == 0.004 and row.conversion_ci[0] < 0.004 < row.conversion_ci[1]
    assert "treatment wins: CTR +50.0% vs control, significant at 95%" == result.verdict
    # Significantly worse: the control wins.
    worse = compare(["control", "treatment"], "control", {"control": counts["treatment"], "treatment": counts["control"]})
    assert worse.winner == "control" and "lower than control" in worse.variants[1].verdict
    # Nothing shown yet.
    empty = compare(["control", "treatment"], "control", {})
    assert empty.variants[1].verdict == "no impressions yet" and empty.variants[1].ctr == 0.0 and not math.isnan(empty.variants[1].ctr_ci[0])
