"""Settings derived from the history: the interest half-life (transforms.derive)."""

from __future__ import annotations

import pytest

from transforms.config import ModelConfig
from transforms.derive import MIN_HALF_LIFE_MS, derive_config
from transforms.events import EventBatch, parse_records

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS
T0 = 1_700_000_000_000  # 2023-11-14, inside the accepted timestamp range


def _events(rows: list[tuple[str, str, str, int]]) -> EventBatch:
    records = []
    for user, item, etype, ts in rows:
        record = {"user_id": user, "item_id": item, "event_type": etype, "ts": T0 + ts}
        if etype == "rating":
            record["rating"] = 4
        records.append(record)
    result = parse_records(records)
    assert not result.rejections
    return result.events


def _shop(spans_hours: list[int]) -> EventBatch:
    """One user per span: views an item, comes back to cart it ``span`` hours later, views others in between."""
    rows = []
    for u, span in enumerate(spans_hours):
        start = u * HOUR_MS
        rows += [(f"u{u}", f"i{u}", "view", start), (f"u{u}", f"other{u}", "view", start + 60_000), (f"u{u}", f"i{u}", "add_to_cart", start + span * HOUR_MS)]
    return _events(rows)


# The derivation never goes below the configured half-life: a config with one below
# every measurement shows the measurement itself.
SHORT = ModelConfig(half_life_ms=1000)


def test_a_measured_half_life_below_the_configured_one_keeps_the_configured_one():
    derivation = derive_config(_shop([1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144]), ModelConfig())
    assert derivation.config.half_life_ms == ModelConfig().half_life_ms == 24 * HOUR_MS
    assert derivation.evidence["half_life_ms"]["value_ms"] == 13 * HOUR_MS
    assert derivation.evidence["half_life_ms"]["floor_ms"] == 24 * HOUR_MS
    ratings = [(f"u{u}", f"film{f}", "rating", (u * 10 + f) * DAY_MS) for u in range(5) for f in range(6)]
    assert derive_config(_events(ratings), ModelConfig()).config.half_life_ms == 45 * DAY_MS  # longer: taken


def test_half_life_is_the_median_span_of_repeated_user_item_interest():
    derivation = derive_config(_shop([1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144]), SHORT)
    assert derivation.config.half_life_ms == 13 * HOUR_MS
    assert derivation.config.derive_from_history == ()
    evidence = derivation.evidence["half_life_ms"]
    assert evidence["repeated_pairs"] == 11 and evidence["user_item_pairs"] == 22
    assert evidence["rule"].startswith("median span")


def test_a_ratings_log_without_returns_gets_the_span_of_its_history():
    rows = [(f"u{u}", f"film{f}", "rating", (u * 10 + f) * DAY_MS) for u in range(5) for f in range(6)]
    derivation = derive_config(_events(rows), SHORT)
    assert derivation.config.half_life_ms == (4 * 10 + 5) * DAY_MS
    assert derivation.evidence["half_life_ms"]["repeated_pairs"] == 0
    assert derivation.evidence["half_life_ms"]["rule"].startswith("few repeated")


def test_too_few_returns_are_not_evidence_and_short_spans_are_floored():
    # 10 repeated pairs but 2,000 pairs in all (0.5 % < 1 %): the history's span decides.
    rows = [(f"u{u}", f"i{u}", "view", u * 1000) for u in range(1990)]
    rows += [(f"r{u}", f"j{u}", "view", 0) for u in range(10)] + [(f"r{u}", f"j{u}", "click", 1000) for u in range(10)]
    assert derive_config(_events(rows), SHORT).config.half_life_ms == 1989 * 1000
    burst = [(f"u{u}", "x", "view", 0) for u in range(10)] + [(f"u{u}", "x", "click", 5) for u in range(10)]
    assert derive_config(_events(burst), SHORT).config.half_life_ms == MIN_HALF_LIFE_MS


def test_negative_events_are_no_interest_and_no_history_keeps_the_configured_value():
    rows = [("u", "i", "add_to_cart", 0), ("u", "i", "remove_from_cart", 50 * DAY_MS)]
    assert derive_config(_events(rows), SHORT).config.half_life_ms == MIN_HALF_LIFE_MS
    derivation = derive_config(EventBatch.empty(), ModelConfig())
    assert derivation.config.half_life_ms == ModelConfig().half_life_ms
    assert derivation.config.derive_from_history == ()


def test_derivation_is_deterministic_and_final():
    events = _shop([2, 4, 6, 8, 10, 12, 14, 16, 18, 20])
    once = derive_config(events, SHORT)
    reordered = events.take(slice(None, None, -1))
    assert derive_config(reordered, SHORT).config == once.config
    assert derive_config(events, once.config).config is once.config


def test_an_explicit_half_life_is_never_derived():
    explicit = ModelConfig.from_dict({"half_life_ms": 7 * DAY_MS})
    assert explicit.derive_from_history == ()
    assert ModelConfig().replace(half_life_ms=DAY_MS).derive_from_history == ()
    assert derive_config(_shop([1] * 12), explicit).config.half_life_ms == 7 * DAY_MS
    # A written config round-trips, derived or not.
    assert ModelConfig.from_dict(ModelConfig().to_dict()) == ModelConfig()
    derived = derive_config(_shop([3] * 12), SHORT).config
    assert ModelConfig.from_dict(derived.to_dict()) == derived


def test_only_derivable_fields_may_be_derived():
    with pytest.raises(ValueError, match="cannot be derived"):
        ModelConfig(derive_from_history=("neighbours",))
    assert ModelConfig.from_dict({"derive_from_history": []}).derive_from_history == ()
