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
