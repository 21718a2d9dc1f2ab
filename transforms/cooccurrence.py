"""The collaborative item model: occurrence and co-occurrence weights, and neighbour lists.

Deltas from users' events (:class:`transforms.profile.ItemContribution`) are
summed per window and applied when the window closes; the neighbours of items
whose row changed are recomputed at the next *model refresh* (every
``model_refresh_ms`` of event time), from the counts as of that moment.
Applying a whole window at once, with weights summed per key first, makes the
result independent of the order in which deltas arrive (exact for integral
weights), which is what lets a sharded Flink job reproduce it bit for bit.

Internally items get dense integer codes (per model instance); rows are sorted
code arrays with weights, so merging and recomputing are vectorised.  Codes
never leave the instance: every ordering that reaches an output breaks ties by
item id, so differently sharded instances agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from transforms.config import ModelConfig
from transforms.similarity import COUNT_MEASURES, pair_similarity, top_k

Neighbours = tuple[np.ndarray, np.ndarray]
EMPTY_CODES = np.empty(0, dtype=np.int64)
EMPTY_WEIGHTS = np.empty(0, dtype=np.float64)


class Vocabulary:
    """Item id <-> dense code, growing as items appear."""

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self.code: dict[str, int] = {}
        self.ids: list[str] = []
        self._array: np.ndarray | None = None
        self._keys: tuple[np.ndarray, np.ndarray] | None = None
        self.encode(list(ids))

    def encode(self, ids: Sequence[str]) -> np.ndarray:
        code = self.code
        out = np.empty(len(ids), dtype=np.int64)
        for k, item in enumerate(ids):
            c = code.get(item)
            if c is None:
                c = code[item] = len(self.ids)
                self.ids.append(item)
                self._array = None
            out[k] = c
        return out

    def array(self) -> np.ndarray:
        """All ids as an object array indexed by code (cached until the vocabulary grows)."""
        if self._array is None:
            self._array = np.array(self.ids, dtype=object)
        return self._array

    def sort_keys(self) -> tuple[np.ndarray, np.ndarray]:
        """Two uint64 keys per code whose lexicographic order is the ids' string order.

        They are the first 16 bytes of the id, big-endian; ids that share their
        first 16 bytes tie here and are ordered exactly by :func:`batch_top_k`.
        Computed once per new id.
        """
        n = len(self.ids)
        if self._keys is None or len(self._keys[0]) != n:
            done = 0 if self._keys is None else len(self._keys[0])
            fresh = np.frombuffer(
                b"".join(i.encode()[:16].ljust(16, b"\0") for i in self.ids[done:]), dtype=">u8"
            ).reshape(-1, 2)
            k1 = fresh[:, 0].astype(np.uint64)
            k2 = fresh[:, 1].astype(np.uint64)
            if self._keys is not None:
                k1 = np.concatenate([self._keys[0], k1])
                k2 = np.concatenate([self._keys[1], k2])
            self._keys = (k1, k2)
        return self._keys

    def __len__(self) -> int:
        return len(self.ids)


def sum_by_key(keys: Iterable[str], weights: Iterable[float]) -> dict[str, float]:
    """Sum weights per key (first-appearance order): one window's occurrence deltas."""
    out: dict[str, float] = {}
    for key, weight in zip(keys, weights):
        out[key] = out.get(key, 0.0) + weight
    return out


def group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Start offsets of the runs of equal values in a sorted array, plus the end offset."""
    if len(sorted_keys) == 0:
        return np.zeros(1, dtype=np.intp)
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1], True])


def sum_pair_codes(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum weights per (a, b) code pair; result sorted by a then b."""
    if len(a) == 0:
        return EMPTY_CODES, EMPTY_CODES, EMPTY_WEIGHTS
    keys = (a.astype(np.int64) << 32) | b.astype(np.int64)
    unique, inverse = np.unique(keys, return_inverse=True)
    sums = np.bincount(inverse, weights=w, minlength=len(unique))
    return unique >> 32, unique & 0xFFFFFFFF, sums


def merge_row(codes: np.ndarray, weights: np.ndarray, new_codes: np.ndarray, new_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Add ``new_weights`` into a sorted row; both inputs sorted by code, result too."""
    if len(codes) == 0:
        return new_codes, new_weights
    pos = np.searchsorted(codes, new_codes)
    found = pos < len(codes)
    found[found] = codes[pos[found]] == new_codes[found]
    weights = weights.copy()
    weights[pos[found]] += new_weights[found]
    if found.all():
        return codes, weights
    missing = ~found
    return np.insert(codes, pos[missing], new_codes[missing]), np.insert(weights, pos[missing], new_weights[missing])


def batch_top_k(row: np.ndarray, candidates: np.ndarray, scores: np.ndarray, k: int, vocab: "Vocabulary") -> list[tuple[int, np.ndarray]]:
    """Per row, the indices of its ``k`` best candidates (score desc, then id asc), in one sort.

    ``row`` labels each candidate (a vocabulary code) with its row; returns
    ``(row, indices)`` in row order.
    """
    if len(row) == 0:
        return []
    k1, k2 = vocab.sort_keys()
    order = np.lexsort((k2[candidates], k1[candidates], -scores, row))
    sorted_rows = row[order]
    bounds = group_starts(sorted_rows)
    out = []
    for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        idx = order[s:e]
        _fix_long_id_ties(idx, candidates, scores, k1, k2, vocab)
        out.append((int(sorted_rows[s]), idx[:k]))
    return out


def _fix_long_id_ties(idx: np.ndarray, candidates: np.ndarray, scores: np.ndarray, k1: np.ndarray, k2: np.ndarray, vocab: "Vocabulary") -> None:
    """Reorder, by full id, runs of equal score whose ids share their first 16 bytes (rare)."""
    if len(idx) < 2:
        return
    c = candidates[idx]
    same = (scores[idx][1:] == scores[idx][:-1]) & (k1[c][1:] == k1[c][:-1]) & (k2[c][1:] == k2[c][:-1])
    if not same.any():
        return
    starts = np.flatnonzero(np.r_[True, ~same])
    ends = np.r_[starts[1:], len(idx)]
    for s, e in zip(starts.tolist(), ends.tolist()):
        if e - s > 1:
            run = idx[s:e]
            idx[s:e] = run[np.argsort(np.array([vocab.ids[x] for x in candidates[run]]), kind="stable")]


@dataclass
class ItemModel:
    """Counts for all items, and co-occurrence rows plus neighbour lists for the owned items.

    ``owns(item)`` selects the rows this instance keeps (all items in the
    reference engine, one shard's items in the Flink job); counts are kept for
    every item because similarity needs ``n_b`` of any neighbour.
    """

    config: ModelConfig
    owns: Callable[[str], bool] = field(default=lambda item: True)
    vocab: Vocabulary = field(default_factory=Vocabulary)
    counts: np.ndarray = field(default_factory=lambda: np.zeros(1024))
    rows: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    dirty: set[int] = field(default_factory=set)
    neighbours: dict[str, Neighbours] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.config.similarity not in COUNT_MEASURES:
            raise ValueError(
                f"similarity {self.config.similarity!r} needs whole user histories (a batch measure, see transforms.swing); "
                f"incremental engines support {', '.join(COUNT_MEASURES)}"
            )

    def _grow(self) -> None:
        if len(self.vocab) > len(self.counts):
            grown = np.zeros(max(len(self.vocab), 2 * len(self.counts)))
            grown[: len(self.counts)] = self.counts
            self.counts = grown

    def count_of(self, item: str) -> float:
        code = self.vocab.code.get(item)
        return 0.0 if code is None else float(self.counts[code])

    def apply_window(
        self,
        items: Sequence[str],
        item_weights: Sequence[float],
        pair_a: Sequence[str],
        pair_b: Sequence[str],
        pair_weights: Sequence[float],
    ) -> None:
        """Apply one window's deltas: occurrence weights of any item, pair weights of owned items."""
        codes = self.vocab.encode(items)
        a = self.vocab.encode(pair_a)
        b = self.vocab.encode(pair_b)
        self._grow()
        if len(codes):
            unique, inverse = np.unique(codes, return_inverse=True)
            self.counts[unique] += np.bincount(inverse, weights=np.asarray(item_weights, dtype=np.float64), minlength=len(unique))
        sa, sb, sw = sum_pair_codes(a, b, np.asarray(pair_weights, dtype=np.float64))
        bounds = group_starts(sa)
        ids = self.vocab.ids
        capacity = self.config.row_capacity
        for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            code = int(sa[s])
            if not self.owns(ids[code]):
                continue
            old = self.rows.get(code, (EMPTY_CODES, EMPTY_WEIGHTS))
            row_codes, row_weights = merge_row(old[0], old[1], sb[s:e], sw[s:e])
            if len(row_codes) > capacity + capacity // 4:
                keep = np.sort(top_k(row_weights, self.vocab.array()[row_codes], capacity))
                row_codes, row_weights = row_codes[keep], row_weights[keep]
            self.rows[code] = (row_codes, row_weights)
            self.dirty.add(code)

    def refresh(self) -> dict[str, Neighbours]:
        """Recompute the neighbours of every item changed since the last refresh; return them."""
        if not self.dirty:
            return {}
        config = self.config
        codes = np.array(sorted(self.dirty), dtype=np.int64)
        self.dirty = set()
        lengths = np.array([len(self.rows[c][0]) for c in codes.tolist()], dtype=np.int64)
        others = np.concatenate([self.rows[c][0] for c in codes.tolist()]) if len(codes) else EMPTY_CODES
        c_ab = np.concatenate([self.rows[c][1] for c in codes.tolist()]) if len(codes) else EMPTY_WEIGHTS
        owner = np.repeat(codes, lengths)
        sims = pair_similarity(config.similarity, c_ab, self.counts[owner], self.counts[others], config.conditional_alpha)
        keep = (c_ab >= config.min_cooccurrence) & (others != owner) & (sims > 0)
        owner, others, sims = owner[keep], others[keep], sims[keep]
        id_array = self.vocab.array()
        out: dict[str, Neighbours] = {id_array[c]: (np.empty(0, dtype=object), EMPTY_WEIGHTS) for c in codes.tolist()}
        for code, idx in batch_top_k(owner, others, sims, config.neighbours, self.vocab):
            out[id_array[code]] = (id_array[others[idx]], sims[idx])
        self.neighbours.update(out)
        return out
