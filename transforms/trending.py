"""Sliding-window trending, global and per top category.

Positive event weights are summed into buckets of ``trending_slide_ms``; the
trending score of an item at time ``T`` is the sum over the buckets that
overlap ``[T - trending_window_ms, T)``.  Totals are kept incrementally (add a
bucket when it fills, subtract it when it slides out), which is exact for
integral weights, so every engine agrees bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from transforms.config import ModelConfig
from transforms.similarity import top_k

TrendList = tuple[np.ndarray, np.ndarray]  # (item ids, scores), best first


@dataclass
class TrendingModel:
    """Bucketed positive weights with running totals; lists computed on demand at a time ``T``."""

    config: ModelConfig
    buckets: dict[int, dict[str, float]] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)
    # Items whose total changed since the last `lists`, and each listed item's category.
    changed: set[str] = field(default_factory=set)
    members: dict[str, set[str]] = field(default_factory=dict)
    category: dict[str, str] = field(default_factory=dict)

    def add(self, items: Iterable[str], ts: Iterable[int], weights: Iterable[float]) -> None:
        """Add positive event weights at their event times."""
        slide = self.config.trending_slide_ms
        totals = self.totals
        for item, t, w in zip(items, ts, weights):
            bucket = self.buckets.setdefault(t // slide, {})
            bucket[item] = bucket.get(item, 0.0) + w
            totals[item] = totals.get(item, 0.0) + w
            self.changed.add(item)

    def expire(self, now_ms: int) -> None:
        """Drop buckets that no longer overlap ``[now - window, now)``."""
        slide = self.config.trending_slide_ms
        first_live = (now_ms - self.config.trending_window_ms) // slide
        for b in sorted(k for k in self.buckets if k < first_live):
            for item, w in self.buckets.pop(b).items():
                self.changed.add(item)
                left = self.totals[item] - w
                if left <= 0.0:
                    del self.totals[item]
                else:
                    self.totals[item] = left

    def lists(self, now_ms: int, category_of: Callable[[str], str]) -> tuple[TrendList, dict[str, TrendList]]:
        """Global trending at ``now_ms`` and the lists of the top categories that changed since the last call.

        Expires old buckets first.  Unchanged categories are not returned (their
        lists are as before), so the cost follows the changes, not the catalog.
        """
        self.expire(now_ms)
        size = self.config.trending_size
        touched: set[str] = set()
        for item in self.changed:
            category = category_of(item)
            old = self.category.get(item)
            if old is not None and old != category:
                self.members[old].discard(item)
                touched.add(old)
            if item in self.totals:
                self.category[item] = category
                self.members.setdefault(category, set()).add(item)
            elif old is not None:
                del self.category[item]
                self.members[old].discard(item)
            touched.add(category)
        self.changed = set()
        ids = np.array(list(self.totals.keys()), dtype=object)
        scores = np.fromiter(self.totals.values(), dtype=np.float64, count=len(ids))
        idx = top_k(scores, ids, size)
        global_list = (ids[idx], scores[idx])
        per_category = {}
        for category in sorted(touched):
            if not category:
                continue
            members = np.array(sorted(self.members.get(category, ())), dtype=object)
            values = np.array([self.totals[m] for m in members], dtype=np.float64)
            pick = top_k(values, members, size)
            per_category[category] = (members[pick], values[pick])
        return global_list, per_category
