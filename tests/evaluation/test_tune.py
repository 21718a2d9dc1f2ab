"""The tuner's search and its validation split (which must never touch the test part)."""

from __future__ import annotations

import json
import random

import pytest

from evaluation import tune as tuner
from flowrec.cli import main as cli
from transforms.config import ModelConfig
from transforms.events import batch_from_columns
from transforms.splits import stratified_random_split, temporal_cut_time

from tests.evaluation.test_harness import two_taste_events, write_jsonl


def test_candidates_start_with_the_base_and_are_distinct():
    space = {"weight_content": (0.0, 0.3, 0.6), "weight_recent": (0.0, 0.1)}
    base = ModelConfig()
    candidates = tuner.sample_candidates(space, base, 50, random.Random(1))
    assert candidates[0] == {}
    keys = [tuple(sorted(c.items())) for c in candidates]
    assert len(keys) == len(set(keys))
    # 3 x 2 combinations, one of which is the base itself (0.3, 0.0): 6 distinct change sets at most.
    assert len(candidates) == 6
    assert all(value != getattr(base, name) for c in candidates for name, value in c.items())


def test_random_search_replays_once_per_state_candidate_and_finds_the_best():
    calls = []

    def evaluate_replay(state_config, scoring):
        calls.append((state_config.half_life_ms, len(scoring)))
        # A made-up objective peaking at half-life 30 days and content weight 0.6.
        return {
            name: -abs(c.half_life_ms - 30 * tuner.DAY_MS) / tuner.DAY_MS - abs(c.weight_content - 0.6)
            for name, c in scoring.items()
        }

    tried = tuner.random_search(
        ModelConfig(),
        {"half_life_ms": (tuner.DAY_MS, 7 * tuner.DAY_MS, 30 * tuner.DAY_MS)},
        {"weight_content": (0.0, 0.3, 0.6)},
        budget=5,
        scoring_trials=5,
        evaluate_replay=evaluate_replay,
    )
    # Only 3 distinct state candidates and 3 scoring candidates exist.
    assert len(calls) == 3 and all(count == 3 for _, count in calls)
    best = max(tried, key=lambda t: t[-1])
    assert best[2].half_life_ms == 30 * tuner.DAY_MS and best[2].weight_content == 0.6
    with pytest.raises(ValueError):
        tuner.random_search(ModelConfig(), {"weight_cf": (1.0,)}, {}, 1, 1, evaluate_replay)
    with pytest.raises(ValueError):
        tuner.random_search(ModelConfig(), {}, {"similarity": ("lift",)}, 1, 1, evaluate_replay)


def _events(n_users: int = 30):
    records = two_taste_events(users=n_users)
    return batch_from_columns(
        [r["user_id"] for r in records],
        [r["item_id"] for r in records],
        ["rating"] * len(records),
        [r["ts"] for r in records],
        rating=[r["rating"] for r in records],
    )


def _rows(batch) -> set[tuple]:
    return set(zip(batch.user.tolist(), batch.item.tolist(), batch.ts.tolist()))


def test_msr_validation_is_carved_from_the_training_part_only():
    events = _events()
    learn, validation, _ = tuner.validation_split(events, "msr", seed=42)
    split = stratified_random_split(events.user, events.item, ratio=0.75, seed=42)
    test_rows = _rows(events.take(split.test))
    train_rows = _rows(events.take(split.train))
    assert not (_rows(learn) | _rows(validation)) & test_rows
    assert _rows(learn) | _rows(validation) == train_rows
    assert not _rows(learn) & _rows(validation)


@pytest.mark.parametrize("protocol", ["temporal", "prequential"])
def test_time_based_validation_ends_before_the_test_period(protocol):
    events = _events()
    cut = temporal_cut_time(events.ts, 0.8)
    learn, validation, evaluate_from = tuner.validation_split(events, protocol, seed=42)
    assert learn.ts.max() < cut
    if protocol == "temporal":
        assert validation.ts.max() < cut and learn.ts.max() <= validation.ts.min()
    else:
        assert validation is None and learn.ts.min() < evaluate_from <= learn.ts.max()


def test_tune_command_writes_a_loadable_config(tmp_path, capsys):
    pytest.importorskip("transforms.engine")
    path = write_jsonl(tmp_path / "events.jsonl", two_taste_events(users=30))
    out = tmp_path / "tuned.json"
    code = cli(["tune", "--dataset", str(path), "--protocol", "msr", "--budget", "2", "--scoring-trials", "3", "--k", "3", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "(base config)" in printed and "chosen: ndcg@3" in printed
    config = ModelConfig.from_dict(json.loads(out.read_text()))
    assert isinstance(config, ModelConfig)


def test_search_space_is_split_into_state_and_scoring_and_validated():
    state, scoring = tuner.parse_space({"neighbours": [50, 100], "weight_content": [0, 0.3], "similarity": ["jaccard"]})
    assert state == {"neighbours": (50, 100), "similarity": ("jaccard",)}
    assert scoring == {"weight_content": (0, 0.3)}
    with pytest.raises(ValueError, match="unknown model setting"):
        tuner.parse_space({"nope": [1]})
    with pytest.raises(ValueError, match="non-empty list"):
        tuner.parse_space({"neighbours": []})
    with pytest.raises(ValueError):
        tuner.parse_space({"similarity": ["euclid"]})


def test_tune_searches_the_embedding_weights_with_a_given_export(tmp_path, capsys):
    from tests.evaluation.test_harness import _tiny_export

    path = write_jsonl(tmp_path / "events.jsonl", two_taste_events(users=30))
    _tiny_export(tmp_path / "exports", [f"{t}{i}" for t in "ab" for i in range(8)])
    out = tmp_path / "tuned.json"
    space = json.dumps({"weight_embedding": [0.0, 4.0], "weight_cf": [0.0], "weight_content": [0.0], "weight_category": [0.0], "weight_popularity": [0.0]})
    argv = ["tune", "--dataset", str(path), "--budget", "1", "--scoring-trials", "4", "--k", "3", "--out", str(out), "--no-progress"]
    code = cli([*argv, "--space", space, "--embeddings", str(tmp_path / "exports")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    # Every other component is off, so only the export can rank anything: it must win.
    chosen = ModelConfig.from_dict(json.loads(out.read_text()))
    assert chosen.weight_embedding == 4.0 and "weight_embedding=4.0" in printed


def test_search_embeddings_adds_their_settings_to_the_default_space():
    with_embeddings = tuner.default_scoring_space(True)
    assert with_embeddings == {**tuner.SCORING_SPACE, **tuner.EMBEDDING_SPACE}
    assert 0.0 in with_embeddings["weight_embedding"] and 0.0 in with_embeddings["weight_sequence"]  # "off" stays a candidate
    assert tuner.default_scoring_space(False) == tuner.SCORING_SPACE
    _, scoring = tuner.parse_space({name: list(values) for name, values in tuner.EMBEDDING_SPACE.items()})
    assert scoring == tuner.EMBEDDING_SPACE  # scoring settings: no replay per candidate


def test_a_shop_tunes_its_own_history_and_serves_with_the_result(tmp_path, capsys, redis_client, redis_url):
    """`flowrec tune --events history.jsonl --catalog catalog.jsonl --out model.json`, then the model config drives a run."""
    import argparse

    from flowrec.commands import run as run_command
    from flowrec.config import load_settings
    from transforms.derive import derive_config
    from evaluation.harness import read_event_file

    shop = tmp_path / "shop"
    assert cli(["generate", "--users", "40", "--items", "30", "--events", "3000", "--days", "6", "--out", str(shop)]) == 0
    history, catalog, model = shop / "events.jsonl", shop / "catalog.jsonl", tmp_path / "model.json"
    space = json.dumps({"neighbours": [20, 50], "weight_content": [0.0, 0.3]})  # the half-life is left to derivation
    argv = ["tune", "--events", str(history), "--catalog", str(catalog), "--protocol", "temporal", "--budget", "2", "--scoring-trials", "2", "--space", space, "--out", str(model), "--no-progress"]
    assert cli(argv) == 0
    printed = capsys.readouterr().out
    assert f"wrote {model}" in printed

    written = json.loads(model.read_text())
    chosen = ModelConfig.from_dict(written)
    # Nothing left to derive: the half-life is the one measured on the whole history.
    assert written["derive_from_history"] == [] and chosen.derive_from_history == ()
    measured = derive_config(read_event_file(history), ModelConfig()).config.half_life_ms
    assert chosen.half_life_ms == measured >= ModelConfig().half_life_ms  # a history only lengthens the configured memory
    assert f"half_life_ms = {measured} (measured on the 3000 events given)" in printed

    # `flowrec run --model-config model.json` reads exactly that config ...
    parser = argparse.ArgumentParser()
    run_command.add_arguments(parser)
    assert load_settings(parser.parse_args(["--events", str(history), "--model-config", str(model)]), env={}).model == chosen
    # ... and so does the reference engine the job is tested against, serving into a real Redis.
    assert cli(["replay", "--events", str(history), "--catalog", str(catalog), "--model-config", str(model), "--redis-url", redis_url]) == 0
    assert any(key.startswith(b"flowrec:v1:") for key in redis_client.keys())


def test_tune_events_must_name_a_file(tmp_path, capsys):
    code = cli(["tune", "--events", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "model.json"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--events" in err and "no such file" in err
    with pytest.raises(SystemExit) as both:
        cli(["tune", "--events", "a.jsonl", "--dataset", "ml-100k", "--out", str(tmp_path / "m.json")])
    assert both.value.code == 2
