"""Versioned state encodings: exact round trips and refusal of unknown versions."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from state.schemas import (
    SchemaError,
    decode_evidence,
    decode_facts,
    decode_ids,
    decode_profile,
    decode_row,
    decode_scored,
    decode_sponsored,
    decode_sponsorships,
    decode_versions,
    encode_evidence,
    encode_facts,
    encode_ids,
    encode_profile,
    encode_row,
    encode_scored,
    encode_sponsored,
    encode_sponsorships,
    encode_versions,
)
from transforms.config import ModelConfig
from transforms.events import ADD_TO_CART, PURCHASE, VIEW
from transforms.profile import ItemContribution, UserProfile, apply_user_events


def test_profile_round_trip_is_exact():
    profile = UserProfile(
        landmark_ms=1_699_999_200_000,
        last_ts=1_700_000_000_123,
        interests={"a": 0.1 + 0.2, "b": 1e-300, "c": -2.0, "d": 2.0**60 + 1.5e3},
        last_action={"a": VIEW, "b": PURCHASE, "d": ADD_TO_CART},  # c was only removed: no action
        history=[("a", 1_700_000_000_000, 1.0), ("b", 1_700_000_000_100, 6.0)],
        cart={"d": 1_700_000_000_050},
        purchased={"b": 1_700_000_000_100},
    )
    raw = encode_profile(profile)
    assert orjson.loads(raw)["v"] == 3
    assert decode_profile(raw) == profile
    assert encode_profile(decode_profile(raw)) == raw  # stable bytes
    tombstone = UserProfile(last_ts=5, forgotten_until=300_005)
    assert decode_profile(encode_profile(tombstone)) == tombstone
    # Version 1 (before tombstones) still restores: never forgotten.
    v1 = orjson.loads(raw)
    del v1["f"]
    v1["v"] = 1
    assert decode_profile(orjson.dumps(v1)) == profile
    # Version 2 (before variant half-lives' sums) restores with none.
    v2 = orjson.loads(raw)
    v2["v"] = 2
    assert decode_profile(orjson.dumps(v2)) == profile
    with_sums = UserProfile(landmark_ms=0, last_ts=9, interests={"a": 1.5, "c": -2.0}, variant_interests={3_600_000: (0, {"a": 0.25, "c": -1.0})})
    raw = encode_profile(with_sums)
    assert orjson.loads(raw)["x"] == [[3_600_000, 0, [0.25, -1.0]]]
    assert decode_profile(raw) == with_sums


def test_profile_from_real_events_round_trips():
    out = ItemContribution()
    config = ModelConfig(half_life_ms=1000)
    profile = apply_user_events(None, ["a", "b", "a", "c"], [VIEW, ADD_TO_CART, PURCHASE, 3], [0, 10, 5000, 6000], [1.0, 4.0, 6.0, -2.0], config, out)
    assert decode_profile(encode_profile(profile)) == profile
    assert decode_profile(encode_profile(UserProfile())) == UserProfile()


def test_row_scored_ids_facts_round_trips():
    assert decode_row(encode_row(["x", "y"], np.array([1.0, 0.1 + 0.2]))) == (["x", "y"], [1.0, 0.1 + 0.2])
    ids, scores = decode_scored(encode_scored(np.array(["x", "y"], dtype=object), np.array([0.5, 0.25])))
    assert ids.dtype == object and ids.tolist() == ["x", "y"]
    assert scores.dtype == np.float64 and scores.tolist() == [0.5, 0.25]
    empty_ids, empty_scores = decode_scored(encode_scored([], []))
    assert len(empty_ids) == 0 and len(empty_scores) == 0
    assert decode_ids(encode_ids(["u1", "u2"])) == ["u1", "u2"]
    assert decode_facts(encode_facts("books", False)) == ("books", False)
    assert decode_facts(encode_facts("", True)) == ("", True)
    assert decode_sponsored(encode_sponsored({"b": 0.1 + 0.2, "a": 2})) == {"a": 2.0, "b": 0.1 + 0.2}
    assert decode_sponsored(encode_sponsored({})) == {}
    assert decode_sponsorships(encode_sponsorships({"b": (0.5, "~"), "a": (2, "c1")})) == {"a": (2.0, "c1"), "b": (0.5, "~")}
    with pytest.raises(SchemaError):
        decode_sponsored(b'{"v": 1, "b": [1]}')


def test_item_evidence_round_trips_exactly():
    since, ids, weights = decode_evidence(encode_evidence(-1, np.array(["b", "a"], dtype=object), np.array([3.0, 0.1 + 0.2])))
    assert since == -1 and ids.dtype == object and ids.tolist() == ["b", "a"] and weights.tolist() == [3.0, 0.1 + 0.2]
    assert decode_evidence(encode_evidence(8_500_000_123, [], []))[0] == 8_500_000_123
    with pytest.raises(SchemaError):
        decode_evidence(b'{"v": 1, "i": ["a"], "s": [1.0]}')  # no since window


def test_versions_round_trip():
    versions = [(17, encode_scored(["a"], [1.0])), (18, encode_facts("toys", True))]
    decoded = decode_versions(encode_versions(versions))
    assert decoded == versions
    assert decode_facts(decoded[1][1]) == ("toys", True)  # payloads stay decodable values
    assert decode_versions(encode_versions([])) == []


@pytest.mark.parametrize(
    "decode",
    [decode_profile, decode_row, decode_scored, decode_ids, decode_versions, decode_facts, decode_sponsored, decode_sponsorships, decode_evidence],
    ids=lambda f: f.__name__,
)
@pytest.mark.parametrize("raw", [b'{"v": 99, "i": [], "s": []}', b'{"i": []}', b"[1, 2]", b'"text"', b'{"v": "1"}'], ids=["v99", "no-v", "list", "string", "v-as-string"])
def test_unknown_versions_are_refused(decode, raw):
    with pytest.raises(SchemaError, match="unsupported state value version"):
        decode(raw)


def test_schema_error_is_a_value_error():
    assert issubclass(SchemaError, ValueError)


def test_wrong_shape_is_a_schema_error():
    with pytest.raises(SchemaError):
        decode_profile(b'{"v": 1}')


def test_blend_learner_and_memo_round_trip_exactly():
    from state.schemas import decode_blend_learner, decode_blend_memo, encode_blend_learner, encode_blend_memo
    from transforms.blend import BlendLearner, BlendMemo

    learner = BlendLearner("configured:1.0;lean_cf:3.1", [0.1 + 0.2, 1e-300, 7.0], current=2, observations=41)
    assert decode_blend_learner(encode_blend_learner(learner)) == learner
    memo = BlendMemo(1_700_000_000_200, "k", ("a", "b", "c"), ((0, 1), (2, 0, 1), ()))
    assert decode_blend_memo(encode_blend_memo(memo)) == memo


@pytest.mark.parametrize(
    "raw",
    [
        orjson.dumps({"v": 1, "k": "x", "g": [1.0], "c": 3, "n": 0}),  # serves a setting it has no gain for
        orjson.dumps({"v": 2, "k": "x", "g": [1.0], "c": 0, "n": 0}),
        orjson.dumps({"v": 1, "k": "x"}),
    ],
)
def test_bad_blend_learners_are_schema_errors(raw):
    from state.schemas import decode_blend_learner

    with pytest.raises(SchemaError):
        decode_blend_learner(raw)


def test_blend_memo_ranks_outside_its_items_are_schema_errors():
    from state.schemas import decode_blend_memo

    with pytest.raises(SchemaError):
        decode_blend_memo(orjson.dumps({"v": 1, "t": 0, "k": "x", "i": ["a"], "r": [[0, 1]]}))
