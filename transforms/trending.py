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
class TrendingState:
    """Everything a :class:`TrendingModel` keeps: buckets (index of ``trending_slide_ms`` -> item -> weight),
    running totals (None: summed from the buckets, in their order), the items changed since the last
    lists, and each listed item's category as of its last filing."""

    buckets: dict[int, dict[str, float]]
    totals: dict[str, float] | None
    changed: list[str]
    category: dict[str, str]


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

    def to_state(self) -> TrendingState:
        """A copy of the model's state (:meth:`from_state` rebuilds the model)."""
        return TrendingState(
            buckets={b: dict(values) for b, values in self.buckets.items()},
            totals=dict(self.totals),
            changed=sorted(self.changed),
            category=dict(self.category),
        )

    @classmethod
    def from_state(cls, config: ModelConfig, state: TrendingState) -> "TrendingModel":
        model = cls(config)
        model.buckets = {int(b): dict(values) for b, values in state.buckets.items()}
        if state.totals is None:
            for values in model.buckets.values():
                for item, w in values.items():
                    model.totals[item] = model.totals.get(item, 0.0) + w
        else:
            model.totals = dict(state.totals)
        model.changed = set(state.changed)
        model.category = dict(state.category)
        for item, category in state.category.items():
            model.members.setdefault(category, set()).add(item)
        return model

    def bucket(self, index: int) -> dict[str, float]:
        """The weights of bucket ``index`` (empty when it holds none)."""
        return dict(self.buckets.get(index, {}))

    def bucket_indices(self) -> set[int]:
        """The indices of the buckets kept (not yet expired)."""
        return set(self.buckets)

    def changed_items(self) -> set[str]:
        """Items whose totals changed since the last :meth:`lists`."""
        return set(self.changed)

    def listed_category(self, item: str) -> str | None:
        """The category ``item`` is filed under (None: not listed)."""
        return self.category.get(item)

    def listed_items(self) -> set[str]:
        return set(self.category)

    def add(self, items: Iterable[str], ts: Iterable[int], weights: Iterable[float]) -> set[int]:
        """Add positive event weights at their event times; the indices of the buckets they went to."""
        slide = self.config.trending_slide_ms
        totals = self.totals
        touched: set[int] = set()
        for item, t, w in zip(items, ts, weights):
            index = t // slide
            touched.add(index)
            bucket = self.buckets.setdefault(index, {})
            bucket[item] = bucket.get(item, 0.0) + w
            totals[item] = totals.get(item, 0.0) + w
            self.changed.add(item)
        return touched

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
