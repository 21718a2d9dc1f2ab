"""Sliding-window trending: bucket sums, expiry at the window edge, global and per-category lists."""

from __future__ import annotations

from transforms.config import ModelConfig
from transforms.trending import TrendingModel

# Window 300 ms in buckets of 100 ms: at time T the live buckets are those overlapping [T - 300, T).
CONFIG = ModelConfig(trending_window_ms=300, trending_slide_ms=100, trending_size=3)


def plain(trend):
    ids, scores = trend
    return list(zip(ids.tolist(), scores.tolist()))


def categories(per_category):
    return {c: plain(t) for c, t in per_category.items()}


def model_with_events():
    model = TrendingModel(CONFIG)
    model.add(["a", "b", "a", "c", "a"], [50, 150, 250, 250, 260], [1.0, 2.0, 1.5, 1.0, 0.5])
    return model


CATEGORY = {"a": "x", "b": "y", "c": "x", "d": "z", "e": ""}.get


def test_bucket_sums():
    model = model_with_events()
    assert model.buckets == {0: {"a": 1.0}, 1: {"b": 2.0}, 2: {"a": 2.0, "c": 1.0}}
    assert model.totals == {"a": 3.0, "b": 2.0, "c": 1.0}


def test_expiry_at_the_window_edge():
    model = model_with_events()
    assert plain(model.lists(300, CATEGORY)[0]) == [("a", 3.0), ("b", 2.0), ("c", 1.0)]
    # At 399 bucket 0 = [0, 100) still overlaps [99, 399).
    assert plain(model.lists(399, CATEGORY)[0]) == [("a", 3.0), ("b", 2.0), ("c", 1.0)]
    # At 400 it does not: a loses its 1.0 and ties with b at 2 -> by id.
    assert plain(model.lists(400, CATEGORY)[0]) == [("a", 2.0), ("b", 2.0), ("c", 1.0)]
    assert sorted(model.buckets) == [1, 2]
    assert plain(model.lists(500, CATEGORY)[0]) == [("a", 2.0), ("c", 1.0)]  # b's only bucket gone
    assert "b" not in model.totals
    assert plain(model.lists(600, CATEGORY)[0]) == []
    assert model.totals == {} and model.buckets == {}


def test_event_exactly_at_window_start_counts():
    model = TrendingModel(CONFIG)
    model.add(["a", "b"], [100, 99], [1.0, 1.0])
    assert plain(model.lists(400, CATEGORY)[0]) == [("a", 1.0)]  # 100 is in [100, 400); 99 is not


def test_size_cuts_the_global_list():
    model = model_with_events()
    model.add(["d"], [290], [5.0])
    assert plain(model.lists(300, CATEGORY)[0]) == [("d", 5.0), ("a", 3.0), ("b", 2.0)]


def test_only_changed_categories_are_returned():
    model = model_with_events()
    _, per_category = model.lists(300, CATEGORY)
    assert categories(per_category) == {"x": [("a", 3.0), ("c", 1.0)], "y": [("b", 2.0)]}
    assert model.lists(301, CATEGORY)[1] == {}  # nothing changed
    model.add(["d", "e"], [350, 350], [5.0, 4.0])
    _, per_category = model.lists(399, CATEGORY)
    assert categories(per_category) == {"z": [("d", 5.0)]}  # e has no category: no list
    # Expiry is a change too: bucket 0 leaves at 400 and a's category list is recomputed.
    assert categories(model.lists(400, CATEGORY)[1]) == {"x": [("a", 2.0), ("c", 1.0)]}
    # A category whose last item expires is returned empty (so its stored list is cleared).
    assert categories(model.lists(500, CATEGORY)[1]) == {"y": []}


def test_item_moving_category():
    model = model_with_events()
    model.lists(300, CATEGORY)
    moved = {"a": "w", "b": "y", "c": "x"}.get
    model.add(["a"], [299], [1.0])
    _, per_category = model.lists(300, moved)
    assert categories(per_category) == {"w": [("a", 4.0)], "x": [("c", 1.0)]}
    assert model.members["x"] == {"c"} and model.category["a"] == "w"


def test_state_round_trip_continues_exactly():
    import random

    from transforms.trending import TrendingState

    rng = random.Random(4)
    original = TrendingModel(CONFIG)
    category = {"a": "x", "b": "y", "c": "x", "d": "z"}.get
    for step in range(1, 30):
        now = step * 70
        original.add([rng.choice("abcd") for _ in range(3)], [now - rng.randint(0, 60) for _ in range(3)], [float(rng.randint(1, 3)) for _ in range(3)])
        if step % 4 == 0:
            original.lists(now, lambda i: category(i, ""))
        if step % 5 == 0:
            state = original.to_state()
            for restored in (TrendingModel.from_state(CONFIG, state), TrendingModel.from_state(CONFIG, TrendingState(state.buckets, None, state.changed, state.category))):
                assert restored.to_state() == state
                now_later = now + 150
                assert [plain(restored.lists(now_later, lambda i: category(i, ""))[0])] == [plain(TrendingModel.from_state(CONFIG, state).lists(now_later, lambda i: category(i, ""))[0])]
    # The restored model then goes on exactly as the original.
    copy = TrendingModel.from_state(CONFIG, original.to_state())
    for model in (original, copy):
        model.add(["a", "d"], [2100, 2110], [2.0, 1.0])
    got = [(plain(m.lists(2200, lambda i: category(i, ""))[0]), categories(m.lists(2250, lambda i: category(i, ""))[1])) for m in (original, copy)]
    assert got[0] == got[1]
    assert original.to_state() == copy.to_state()
