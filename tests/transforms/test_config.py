"""ModelConfig validation and serialisation; per-event weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transforms.config import DEFAULT_EVENT_WEIGHTS, SIMILARITY_MEASURES, ModelConfig, event_weights
from transforms.events import EVENT_CODE, EVENT_TYPES

POSITIVE_FIELDS = [
    "half_life_ms", "history_length", "session_gap_ms", "neighbours", "row_capacity", "window_ms",
    "model_refresh_ms", "top_n", "interest_items", "max_user_items", "trending_window_ms",
    "trending_slide_ms", "trending_size", "content_neighbours", "attribution_window_ms", "impressions_kept",
]


def test_defaults_are_valid():
    config = ModelConfig()
    assert config.similarity == "cosine" and config.similarity in SIMILARITY_MEASURES
    assert dict(config.event_weights) == DEFAULT_EVENT_WEIGHTS
    assert config.trending_window_ms % config.trending_slide_ms == 0


@pytest.mark.parametrize("name", POSITIVE_FIELDS)
@pytest.mark.parametrize("value", [0, -1])
def test_positive_fields(name, value):
    with pytest.raises(ValueError, match=f"{name} must be > 0, got {value}"):
        ModelConfig(**{name: value})


def test_trending_window_multiple_of_slide():
    with pytest.raises(ValueError, match="multiple"):
        ModelConfig(trending_window_ms=1000, trending_slide_ms=300)
    assert ModelConfig(trending_window_ms=900, trending_slide_ms=300).trending_window_ms == 900


def test_unknown_similarity_and_event_type():
    with pytest.raises(ValueError, match="similarity must be one of"):
        ModelConfig(similarity="pearson")
    with pytest.raises(ValueError, match=r"unknown event types in event_weights: \['buy'\]"):
        ModelConfig(event_weights={"view": 1.0, "buy": 2.0})


def test_frozen_and_replace():
    config = ModelConfig()
    with pytest.raises(Exception):
        config.top_n = 5  # type: ignore[misc]
    changed = config.replace(top_n=5, similarity="jaccard")
    assert (changed.top_n, changed.similarity, config.top_n) == (5, "jaccard", 20)
    with pytest.raises(ValueError):
        config.replace(window_ms=0)


def test_dict_round_trip_through_json():
    config = ModelConfig(
        event_weights={**DEFAULT_EVENT_WEIGHTS, "view": 0.5, "remove_from_cart": -3.0},
        half_life_ms=3_600_000,
        similarity="conditional",
        conditional_alpha=0.25,
        repeat_purchase_categories=("grocery", "pets"),
        allow_categories=("grocery",),
        deny_categories=("adult",),
        exclude_seen=True,
        max_per_category=2,
        weight_recent=0.1,
    )
    data = json.loads(json.dumps(config.to_dict()))  # JSON-ready: tuples became lists
    assert data["repeat_purchase_categories"] == ["grocery", "pets"]
    assert data["event_weights"]["view"] == 0.5
    again = ModelConfig.from_dict(data)
    assert again == config
    assert again.repeat_purchase_categories == ("grocery", "pets") and again.deny_categories == ("adult",)


def test_from_dict_partial_weights_and_unknown_names():
    config = ModelConfig.from_dict({"event_weights": {"purchase": 10.0}, "top_n": 7})
    assert config.event_weights["purchase"] == 10.0
    assert config.event_weights["view"] == DEFAULT_EVENT_WEIGHTS["view"]  # merged with the defaults
    assert config.top_n == 7
    with pytest.raises(ValueError, match=r"unknown model settings: \['bogus'\]"):
        ModelConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="buy"):
        ModelConfig.from_dict({"event_weights": {"buy": 1.0}})


def test_weight_table_by_code():
    config = ModelConfig(event_weights={"view": 1.5, "purchase": 9.0})  # others absent -> 0
    table = config.weight_table()
    assert table.tolist() == [1.5, 0.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0]
    assert ModelConfig().weight_table().tolist() == [DEFAULT_EVENT_WEIGHTS.get(name, 0.0) for name in EVENT_TYPES]


def test_event_weights():
    codes = np.array([EVENT_CODE[n] for n in ("view", "click", "add_to_cart", "remove_from_cart", "favorite", "purchase", "rating", "rating", "forget")], dtype=np.int8)
    rating = np.array([np.nan] * 6 + [4.0, np.nan, np.nan])
    # Defaults: view 1, click 2, cart 4, remove -2 (negative feedback), favorite 3, purchase 6,
    # rating 1 * rating (4 -> 4; a missing rating -> 0), forget 0.
    assert event_weights(codes, rating, ModelConfig()).tolist() == [1.0, 2.0, 4.0, -2.0, 3.0, 6.0, 4.0, 0.0, 0.0]
    half = ModelConfig(event_weights={**DEFAULT_EVENT_WEIGHTS, "rating": 0.5})
    assert event_weights(codes[6:7], np.array([3.0]), half).tolist() == [1.5]  # rating * weight


def test_event_weights_do_not_touch_the_table():
    config = ModelConfig()
    codes = np.array([EVENT_CODE["rating"]], dtype=np.int8)
    event_weights(codes, np.array([5.0]), config)
    assert config.weight_table()[EVENT_CODE["rating"]] == 1.0
