"""RecentlyUsed: the one bound of the in-memory caches of state (decoded profiles, MapByKey's entries)."""

from __future__ import annotations

from state.recent import RecentlyUsed


def test_the_least_recently_used_entry_goes_first_and_reads_count_as_use():
    cache: RecentlyUsed[str, int] = RecentlyUsed(2)
    cache.keep("a", 1)
    cache.keep("b", 2)
    assert cache.get("a") == 1  # now "b" is the least recently used
    cache.keep("c", 3)
    assert len(cache) == 2 and cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    cache.keep("a", 4)  # kept again: replaced and most recent
    cache.keep("d", 5)
    assert cache.get("c") is None and cache.get("a") == 4
    cache.drop("a")
    cache.drop("nobody")
    assert len(cache) == 1 and cache.get("a", "absent") == "absent"


def test_a_kept_none_is_an_entry_not_an_absence():
    """MapByKey remembers that a state entry is absent by keeping None for it."""
    cache: RecentlyUsed[str, None] = RecentlyUsed(3)
    marker = object()
    cache.keep("gone", None)
    assert cache.get("gone", marker) is None and cache.get("never", marker) is marker


def test_long_churn_keeps_exactly_the_most_recently_used_entries():
    """Many more keys than the bound, read and kept in a random order (the shape of a large shop's users
    passing through a cache): after every step the cache holds what a plain least-recently-used list holds."""
    import random

    rng = random.Random(3)
    bound = 50
    cache: RecentlyUsed[int, int] = RecentlyUsed(bound)
    expected: list[int] = []  # least recently used first
    values: dict[int, int] = {}
    for step in range(20_000):
        key = rng.randrange(400)
        if rng.random() < 0.5:
            found = cache.get(key)
            assert found == (values[key] if key in expected else None), step
            if key in expected:
                expected.remove(key)
                expected.append(key)
        else:
            cache.keep(key, step)
            values[key] = step
            if key in expected:
                expected.remove(key)
            expected.append(key)
            del expected[:-bound]
        assert len(cache) == len(expected)
