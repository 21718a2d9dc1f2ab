"""A mapping that keeps the most recently used entries, at most a fixed number: the bound of every
in-memory cache of state that grows with users (decoded profiles, decoded keyed-state entries)."""

from __future__ import annotations

from typing import Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class RecentlyUsed(Generic[K, V]):
    """At most ``max_entries`` entries; keeping one beyond that drops the least recently used.

    Reading an entry (:meth:`get`) or keeping it (:meth:`keep`) makes it the most recently used.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: dict[K, V] = {}  # least recently used first

    def get(self, key: K, default=None):
        """``key``'s value (now the most recently used), or ``default`` when it is not kept."""
        entries = self._entries
        value = entries.pop(key, _MISSING)
        if value is _MISSING:
            return default
        entries[key] = value
        return value

    def keep(self, key: K, value: V) -> None:
        """Keep ``value`` for ``key`` as the most recently used; beyond ``max_entries``, drop the least recently used."""
        entries = self._entries
        entries.pop(key, None)
        entries[key] = value
        while len(entries) > self.max_entries:
            del entries[next(iter(entries))]

    def drop(self, key: K) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


_MISSING = object()
