"""Training data from an event log and a catalog, in the form the job sees at serving time (NumPy only).

* **Items.**  Every catalog item and every item with an event gets a row (ids
  in ascending order).  ``has_id`` marks the items among some user's
  positive interests: only they get a learned id embedding; the others are placed by their
  side features alone, exactly as at export time.
* **Side features** per item: the tokens of
  :func:`transforms.content.feature_tokens` (title words, every category-path
  prefix, brand, tags, and a price bucket within the item's top category by
  quantiles of log price) that occur in at least ``min_feature_items`` items.
  Serving tokenises a new item with the same function and the exported edges.
* **Interests.**  Each user's events (time order) go through
  :func:`transforms.profile.apply_user_events` with the model config — the
  same code the job runs — and the positive interests are decayed to the
  user's last event.  These are the weights ``v_i`` of the served user vector
  ``u = sum v_i q_i / sum v_i`` (:mod:`transforms.embedding`), so training
  sees what serving sees, including pruning and negative feedback.
* **Sequences.**  Walking each user's positive events in time order with the
  job's history rule (distinct items, most recent last, at most ``length``),
  every event on an item not in the current history is one example:
  ``(history before it, item)``.  The final history is what the sequence model
  reads at serving time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from transforms.catalog import CatalogItem
from transforms.config import ModelConfig, event_weights
from transforms.content import feature_bag, price_bucket_edges
from transforms.events import FORGET, EventBatch
from transforms.profile import ItemContribution, apply_user_events, group_by_user

log = logging.getLogger(__name__)

PAD = -1  # row index of an empty sequence slot


@dataclass(frozen=True, eq=False)
class ItemFeatures:
    """Side-feature bags: item row ``r`` has features ``indices[indptr[r]:indptr[r + 1]]`` (names in ``names``).

    ``price_edges`` are the price bucket edges the tokens were made with
    (:func:`transforms.content.price_bucket_edges`); the export carries them
    and the vectors of ``names``, so serving can place a new item the same way.
    """

    names: tuple[str, ...]  # ascending
    indptr: np.ndarray  # int64, (items + 1,)
    indices: np.ndarray  # int64
    price_edges: Mapping[str, np.ndarray]

    def of(self, row: int) -> list[str]:
        return [self.names[k] for k in self.indices[self.indptr[row]:self.indptr[row + 1]]]


@dataclass(frozen=True, eq=False)
class UserInterests:
    """Positive decayed interests per user (CSR): user ``users[k]`` has ``rows``/``weights`` in ``indptr[k]:indptr[k + 1]``."""

    users: np.ndarray  # object[str]
    indptr: np.ndarray  # int64
    rows: np.ndarray  # int64 item rows
    weights: np.ndarray  # float64, > 0

    def __len__(self) -> int:
        return len(self.users)

    def of(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        span = slice(self.indptr[k], self.indptr[k + 1])
        return self.rows[span], self.weights[span]


@dataclass(frozen=True, eq=False)
class SequenceExamples:
    """Next-item examples: ``inputs[m]`` holds the history rows (oldest first, left-padded with :data:`PAD`)."""

    inputs: np.ndarray  # int64, (examples, length)
    targets: np.ndarray  # int64, (examples,)

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True, eq=False)
class TrainingData:
    """Everything the trainer reads, indexed by item row."""

    item_ids: np.ndarray  # object[str], ascending
    has_id: np.ndarray  # bool: the item is among some user's positive interests (so it has an id embedding)
    features: ItemFeatures
    interests: UserInterests
    recent: Mapping[str, np.ndarray]  # user -> history rows, oldest first
    examples: SequenceExamples
    sequence_length: int

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def rows_of(self) -> dict[str, int]:
        return {item: k for k, item in enumerate(self.item_ids.tolist())}


def item_vocabulary(events: EventBatch, catalog: Sequence[CatalogItem]) -> np.ndarray:
    """Ascending ids of every catalog item and every item with an event (``forget`` events name none)."""
    ids = {c.item_id for c in catalog}
    ids.update(item for item, etype in zip(events.item.tolist(), events.etype.tolist()) if etype != FORGET and item)
    return np.array(sorted(ids), dtype=object)


def build_item_features(item_ids: np.ndarray, catalog: Sequence[CatalogItem], min_items: int, buckets: int) -> ItemFeatures:
    """Feature bags for ``item_ids`` (items missing from the catalog get none); rare tokens are dropped."""
    latest = {c.item_id: c for c in catalog}
    edges = price_bucket_edges(latest.values(), buckets)
    bags = [feature_bag(latest[item], edges) if item in latest else [] for item in item_ids.tolist()]
    counts: dict[str, int] = {}
    for bag in bags:
        for token in bag:
            counts[token] = counts.get(token, 0) + 1
    names = tuple(sorted(token for token, count in counts.items() if count >= min_items))
    column = {token: k for k, token in enumerate(names)}
    indices = [[column[t] for t in bag if t in column] for bag in bags]
    indptr = np.zeros(len(bags) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(b) for b in indices])
    flat = np.fromiter((k for b in indices for k in b), dtype=np.int64, count=int(indptr[-1]))
    return ItemFeatures(names=names, indptr=indptr, indices=flat, price_edges=edges)


def pad_windows(windows: Sequence[Sequence[int]], length: int) -> np.ndarray:
    """Left-padded ``(n, length)`` rows (:data:`PAD` for empty slots), keeping each window's last ``length`` items."""
    out = np.full((len(windows), length), PAD, dtype=np.int64)
    for m, rows in enumerate(windows):
        rows = list(rows)[-length:]
        out[m, length - len(rows):] = rows
    return out


def _walk_history(rows: list[int], codes: list[int], weights: list[float], length: int) -> tuple[list[list[int]], list[int], list[int]]:
    """One user's sequence examples and final history (the job's rule: distinct positive items, most recent last)."""
    history: list[int] = []
    inputs, targets = [], []
    for row, code, w in zip(rows, codes, weights):
        if code == FORGET:
            history = []
            continue
        if w <= 0:
            continue
        if history and row not in history:
            inputs.append(list(history))
            targets.append(row)
        history = [h for h in history if h != row] + [row]
        history = history[-length:]
    return inputs, targets, history


def prepare(
    events: EventBatch,
    catalog: Sequence[CatalogItem],
    model_config: ModelConfig,
    sequence_length: int,
    min_feature_items: int = 2,
    price_buckets: int = 5,
    item_ids: np.ndarray | None = None,
) -> TrainingData:
    """Training data from ``events`` (any order) and ``catalog``; ``item_ids`` fixes the item rows (default: vocabulary of both)."""
    if item_ids is None:
        item_ids = item_vocabulary(events, catalog)
    row_of = {item: k for k, item in enumerate(item_ids.tolist())}
    ordered = events.sorted_by_time()
    weights = event_weights(ordered.etype, ordered.rating, model_config)
    item_rows = np.fromiter((row_of.get(item, PAD) for item in ordered.item.tolist()), dtype=np.int64, count=len(ordered))
    known = (item_rows != PAD) | (ordered.etype == FORGET)
    ordered, weights, item_rows = ordered.take(known), weights[known], item_rows[known]

    users, indptr, rows, values = [], [0], [], []
    recent: dict[str, np.ndarray] = {}
    example_inputs: list[list[int]] = []
    example_targets: list[int] = []
    has_id = np.zeros(len(item_ids), dtype=bool)
    sink = ItemContribution()  # the item-model deltas are not needed here
    for user, index in group_by_user(ordered.user):
        codes = ordered.etype[index].tolist()
        w = weights[index].tolist()
        profile = apply_user_events(None, ordered.item[index].tolist(), codes, ordered.ts[index].tolist(), w, model_config, sink)
        sink = ItemContribution()
        inputs, targets, history = _walk_history(item_rows[index].tolist(), codes, w, sequence_length)
        example_inputs += inputs
        example_targets += targets
        if history:
            recent[user] = np.array(history, dtype=np.int64)
        if profile is None:
            continue
        # Decayed to the user's last event: the state the job scores from right after it.
        scale = 2.0 ** ((profile.landmark_ms - profile.last_ts) / model_config.half_life_ms)
        positive = sorted((row_of[item], value * scale) for item, value in profile.interests.items() if value > 0)
        if not positive:
            continue
        users.append(user)
        rows += [r for r, _ in positive]
        values += [v for _, v in positive]
        indptr.append(len(rows))
        has_id[[r for r, _ in positive]] = True
    inputs = pad_windows(example_inputs, sequence_length)
    return TrainingData(
        item_ids=item_ids,
        has_id=has_id,
        features=build_item_features(item_ids, catalog, min_feature_items, price_buckets),
        interests=UserInterests(
            users=np.array(users, dtype=object),
            indptr=np.array(indptr, dtype=np.int64),
            rows=np.array(rows, dtype=np.int64),
            weights=np.array(values, dtype=np.float64),
        ),
        recent=recent,
        examples=SequenceExamples(inputs=inputs, targets=np.array(example_targets, dtype=np.int64)),
        sequence_length=sequence_length,
    )
