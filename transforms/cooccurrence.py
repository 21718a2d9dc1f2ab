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
        self._by_id = np.empty(0, dtype=np.int64)  # codes in id order (id_rank's inverse)
        self._rank = np.empty(0, dtype=np.int64)
        self.encode(list(ids))

    def encode(self, ids: Sequence[str]) -> np.ndarray:
        """Codes of ``ids``; unknown ids get the next codes, in order of first appearance."""
        code = self.code
        try:  # the common case, every id known: one C-level pass
            return np.fromiter(map(code.__getitem__, ids), dtype=np.int64, count=len(ids))
        except KeyError:
            pass
        for item in dict.fromkeys(ids):
            if item not in code:
                code[item] = len(self.ids)
                self.ids.append(item)
        self._array = None
        return np.fromiter(map(code.__getitem__, ids), dtype=np.int64, count=len(ids))

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

    def id_rank(self) -> np.ndarray:
        """Each code's position in the ids' string order (exact; ids are unique, so no ties).

        Kept as the vocabulary grows: only the new ids are sorted, then merged
        by binary search, so a new item costs O(log n) comparisons and O(n) integer work.
        """
        n = len(self.ids)
        if len(self._rank) != n:
            ids = self.array()
            new = np.arange(len(self._rank), n, dtype=np.int64)
            new = new[np.argsort(ids[new], kind="stable")]
            at = np.searchsorted(ids[self._by_id], ids[new])
            self._by_id = np.insert(self._by_id, at, new)
            self._rank = np.empty(n, dtype=np.int64)
            self._rank[self._by_id] = np.arange(n, dtype=np.int64)
        return self._rank

    def __len__(self) -> int:
        return len(self.ids)


def sum_by_key(keys: Iterable[str], weights: Iterable[float]) -> dict[str, float]:
    """Sum weights per key (first-appearance order): one window's occurrence deltas."""
    out: dict[str, float] = {}
    for key, weight in zip(keys, weights):
        out[key] = out.get(key, 0.0) + weight
    return out


def group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Start offsets of the runs of equal values in a sorted array, plus the end offset.

    ``bounds[:-1]`` are the runs' starts, ``np.diff(bounds)`` their lengths.
    (No ``np.r_``: it costs microseconds a call, and the scorer calls this many
    times per batch.)
    """
    n = len(sorted_keys)
    if n == 0:
        return np.zeros(1, dtype=np.intp)
    change = np.empty(n + 1, dtype=bool)
    change[0] = change[n] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=change[1:n])
    return np.flatnonzero(change)


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


# row_thresholds partitions row by row a batch of at most FEW_ROWS rows over the cut, and any row
# longer than ROW_BY_ROW_FROM; the other rows are laid out in padded matrices.  Measured on rows of
# 11-512 entries: row by row costs about 3 us a row plus its partition, the layout wins on rows
# shorter than about 64 (the item model's), and loses up to 2x on longer ones (a user's candidates).
FEW_ROWS = 4
ROW_BY_ROW_FROM = 64


def row_thresholds(row: np.ndarray, value: np.ndarray, want: int) -> np.ndarray:
    """Per entry, its row's ``want``-th largest value (-inf for a row of at most ``want`` entries: it
    keeps them all); ``row`` ascending.

    ``value`` is one column (n,) or several (n, columns), each ranked on its
    own: the result has ``value``'s shape.  Short rows are laid out in a
    padded matrix per power-of-two length class, so the partition works on
    whole rows at once and no class pads a short row to a long one; the
    layout depends on ``row`` alone, so several columns share it (the blend's
    memos rank every setting's scores of the same candidates).  Long rows,
    and every row of a batch of a few, are partitioned one by one (see
    :data:`ROW_BY_ROW_FROM`).
    """
    columns = value[:, None] if value.ndim == 1 else value  # (n, columns), n may be 0
    bounds = group_starts(row)
    starts, lengths = bounds[:-1], np.diff(bounds)
    per_row = np.full((len(starts), columns.shape[1]), -np.inf)
    long_rows = np.flatnonzero(lengths > want)
    if len(long_rows) <= FEW_ROWS:
        by_row, laid_out = long_rows, long_rows[:0]
    else:
        longer = lengths[long_rows] > ROW_BY_ROW_FROM
        by_row, laid_out = long_rows[longer], long_rows[~longer]
    for r, start, length in zip(by_row.tolist(), starts[by_row].tolist(), lengths[by_row].tolist()):
        per_row[r] = np.partition(columns[start : start + length], length - want, axis=0)[length - want]
    if len(laid_out):
        width_class = np.ceil(np.log2(lengths[laid_out])).astype(np.int64)
        for c in np.unique(width_class).tolist():
            members = laid_out[width_class == c]
            width = int(lengths[members].max())
            # (column, row, position): each column's rows partitioned at once; filled through a flat view.
            matrix = np.full((columns.shape[1], len(members), width), -np.inf)
            member_lengths = lengths[members]
            member_row = np.repeat(np.arange(len(members)), member_lengths)
            column = run_positions(member_row)
            source = np.repeat(starts[members], member_lengths) + column
            matrix.reshape(columns.shape[1], -1)[:, member_row * width + column] = columns[source].T
            per_row[members] = np.partition(matrix, width - want, axis=2)[:, :, width - want].T
    return np.repeat(per_row, lengths, axis=0).reshape(value.shape)


def may_reach_top(row: np.ndarray, value: np.ndarray, want: int, block: int = 8) -> np.ndarray:
    """Which entries can be among their row's ``want`` largest positive values in some column
    (``value``: (n, columns); ``row`` ascending): a superset, cheap to find, that holds every one.

    Each row is cut into runs of ``block`` entries; the ``want``-th largest run
    maximum is a value at least ``want`` entries of the row reach, so no entry
    below it, in that column, is among the row's ``want`` largest.  A row of at
    most ``want`` runs keeps all its positive entries.  Ranking only the kept
    entries gives the same ``want`` largest (ties included) as ranking all.
    """
    columns = np.ascontiguousarray(value.T)  # (columns, n): a column's pass reads memory in order
    run_start = run_positions(row) % block == 0
    starts = np.flatnonzero(run_start)
    floor = row_thresholds(row[starts], np.maximum.reduceat(columns, starts, axis=1).T, want)
    of_run = np.cumsum(run_start) - 1
    keep = np.zeros(len(row), dtype=bool)
    for c, column in enumerate(columns):
        keep |= (column > 0) & (column >= floor[:, c][of_run])
    return keep


def rank_within(group: np.ndarray) -> np.ndarray:
    """Each entry's position among the earlier entries of its group (0 for the first), order kept."""
    if len(group) == 0:
        return np.empty(0, dtype=np.intp)
    order = np.argsort(group, kind="stable")
    out = np.empty(len(group), dtype=np.intp)
    out[order] = run_positions(group[order])
    return out


def run_positions(sorted_keys: np.ndarray) -> np.ndarray:
    """:func:`rank_within` for keys already grouped (equal keys adjacent, as in a sorted array): each
    entry's position in its run, without the sort."""
    bounds = group_starts(sorted_keys)
    return np.arange(len(sorted_keys)) - np.repeat(bounds[:-1], np.diff(bounds))


def sorted_unique(sorted_keys: np.ndarray) -> np.ndarray:
    """``np.unique`` of an array already sorted ascending, without the sort."""
    return sorted_keys[group_starts(sorted_keys)[:-1]]


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
    # Rows where equal scores meet ids sharing their first 16 bytes need the exact order (rare): found in one pass.
    c, s_sorted = candidates[order], scores[order]
    tied = (sorted_rows[1:] == sorted_rows[:-1]) & (s_sorted[1:] == s_sorted[:-1]) & (k1[c][1:] == k1[c][:-1]) & (k2[c][1:] == k2[c][:-1])
    needs_fix = set(sorted_rows[1:][tied].tolist()) if tied.any() else set()
    out = []
    for s, e, r in zip(bounds[:-1].tolist(), bounds[1:].tolist(), sorted_rows[bounds[:-1]].tolist()):
        idx = order[s:e]
        if r in needs_fix:
            _fix_long_id_ties(idx, candidates, scores, k1, k2, vocab)
        out.append((r, idx[:k]))
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
class ItemModelState:
    """The item model (or the part of it changed since a point) as columns, keyed by vocabulary code.

    ``base`` is the vocabulary size the state extends: ``ids`` are the ids of
    codes ``base, base + 1, ...`` (a full state has ``base`` 0).  Codes are
    stable: a model restored from a full state and then given the later
    changes in order numbers items exactly as the model that wrote them.
    ``count_codes``/``counts``: occurrence weights (of every changed item);
    ``row_items`` (ascending), ``row_ptr`` (CSR offsets), ``row_codes``,
    ``row_weights``: the full co-occurrence rows of the changed owned items,
    each sorted by code; ``dirty``: every item whose neighbours are due at the
    next refresh (the whole set, not a change).
    """

    base: int
    ids: list[str]
    count_codes: np.ndarray
    counts: np.ndarray
    row_items: np.ndarray
    row_ptr: np.ndarray
    row_codes: np.ndarray
    row_weights: np.ndarray
    dirty: np.ndarray

    @property
    def vocabulary_size(self) -> int:
        return self.base + len(self.ids)


@dataclass
class ItemModel:
    """Counts for all items, and co-occurrence rows plus neighbour lists for the owned items.

    ``owns(item)`` selects the rows this instance keeps (all items in the
    reference engine, one shard's items in the Flink job); counts are kept for
    every item because similarity needs ``n_b`` of any neighbour.

    State goes in and out only through :meth:`to_state`, :meth:`changes` and
    :meth:`from_state` / :meth:`apply_state` (columns, see
    :class:`ItemModelState`); the neighbour lists are outputs, not state.
    """

    config: ModelConfig
    owns: Callable[[str], bool] = field(default=lambda item: True)
    vocab: Vocabulary = field(default_factory=Vocabulary)
    counts: np.ndarray = field(default_factory=lambda: np.zeros(1024))
    rows: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    dirty: set[int] = field(default_factory=set)
    neighbours: dict[str, Neighbours] = field(default_factory=dict)
    # Lists by each other measure of ``config.variant_similarities`` (measure -> item -> list),
    # refreshed with ``neighbours`` for the same items.
    variant_neighbours: dict[str, dict[str, Neighbours]] = field(default_factory=dict)
    # What changed since the last `changes()`: counts, rows, and the vocabulary size then.
    _changed_counts: set[int] = field(default_factory=set, repr=False)
    _changed_rows: set[int] = field(default_factory=set, repr=False)
    _taken_vocab: int = field(default=0, repr=False)
    _refreshed: bool = field(default=False, repr=False)
    # Whether each code's row is owned (computed once per code).
    _owned: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), repr=False)

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

    def _owned_mask(self) -> np.ndarray:
        """Per code, whether this instance keeps its row (``owns`` is asked once per new code)."""
        n = len(self.vocab)
        if len(self._owned) < n:
            ids = self.vocab.ids
            fresh = np.fromiter((self.owns(ids[c]) for c in range(len(self._owned), n)), dtype=bool, count=n - len(self._owned))
            self._owned = np.concatenate([self._owned, fresh])
        return self._owned

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
        """Apply one window's deltas: occurrence weights of any item, pair weights of owned items.

        Weights are summed per item and per pair first, then added to the
        counts and rows; a row longer than ``row_capacity * 5/4`` is cut back to
        its ``row_capacity`` heaviest entries (ties: smaller id kept).
        """
        codes = self.vocab.encode(items)
        a = self.vocab.encode(pair_a)
        b = self.vocab.encode(pair_b)
        self._grow()
        if len(codes):
            unique, inverse = np.unique(codes, return_inverse=True)
            self.counts[unique] += np.bincount(inverse, weights=np.asarray(item_weights, dtype=np.float64), minlength=len(unique))
            self._changed_counts.update(unique.tolist())
        sa, sb, sw = sum_pair_codes(a, b, np.asarray(pair_weights, dtype=np.float64))
        if len(sa):
            owned = self._owned_mask()[sa]
            self._merge_rows(sa[owned], sb[owned], sw[owned])

    def _merge_rows(self, sa: np.ndarray, sb: np.ndarray, sw: np.ndarray) -> None:
        """Add summed pair weights (sorted by a, then b; unique pairs) into the rows, all rows at once."""
        if not len(sa):
            return
        bounds = group_starts(sa)
        heads = sa[bounds[:-1]].tolist()
        k = len(heads)
        old = [self.rows.get(c) for c in heads]
        old_len = np.fromiter((0 if r is None else len(r[0]) for r in old), dtype=np.int64, count=k)
        present = [r for r in old if r is not None]
        old_codes = np.concatenate([r[0] for r in present]) if present else EMPTY_CODES
        old_weights = np.concatenate([r[1] for r in present]) if present else EMPTY_WEIGHTS
        row_of_old = np.repeat(np.arange(k, dtype=np.int64), old_len)
        row_of_new = np.repeat(np.arange(k, dtype=np.int64), np.diff(bounds))
        # One key space for all touched rows: (row index, code), sorted since each row is sorted.
        old_keys = (row_of_old << 32) | old_codes
        new_keys = (row_of_new << 32) | sb
        pos = np.searchsorted(old_keys, new_keys)
        found = pos < len(old_keys)
        found[found] = old_keys[pos[found]] == new_keys[found]
        old_weights[pos[found]] += sw[found]  # a concatenation: a fresh array, no row is changed in place
        missing = ~found
        merged_codes = np.insert(old_codes, pos[missing], sb[missing])
        merged_weights = np.insert(old_weights, pos[missing], sw[missing])
        lengths = old_len + np.bincount(row_of_new[missing], minlength=k)
        ends = np.cumsum(lengths).tolist()
        capacity = self.config.row_capacity
        limit = capacity + capacity // 4
        start = 0
        for code, end in zip(heads, ends):
            row_codes, row_weights = merged_codes[start:end].copy(), merged_weights[start:end].copy()
            start = end
            if len(row_codes) > limit:
                keep = np.sort(top_k(row_weights, self.vocab.array()[row_codes], capacity))
                row_codes, row_weights = row_codes[keep], row_weights[keep]
            self.rows[code] = (row_codes, row_weights)
        self.dirty.update(heads)
        self._changed_rows.update(heads)

    def refresh(self) -> dict[str, Neighbours]:
        """Recompute the neighbours of every item changed since the last refresh; return them."""
        if not self.dirty:
            return {}
        config = self.config
        codes = np.array(sorted(self.dirty), dtype=np.int64)
        self.dirty = set()
        self._refreshed = True
        lengths = np.array([len(self.rows[c][0]) for c in codes.tolist()], dtype=np.int64)
        others = np.concatenate([self.rows[c][0] for c in codes.tolist()]) if len(codes) else EMPTY_CODES
        c_ab = np.concatenate([self.rows[c][1] for c in codes.tolist()]) if len(codes) else EMPTY_WEIGHTS
        owner = np.repeat(codes, lengths)
        counted = (c_ab >= config.min_cooccurrence) & (others != owner)
        owner, others, c_ab = owner[counted], others[counted], c_ab[counted]
        out = self._lists(codes, owner, others, c_ab, config.similarity)
        self.neighbours.update(out)
        for measure in config.extra_similarities():
            self.variant_neighbours.setdefault(measure, {}).update(self._lists(codes, owner, others, c_ab, measure))
        return out

    def refresh_rows(self, limit: int) -> dict[str, Neighbours]:
        """The ``limit`` heaviest entries of every row changed since the last refresh (heaviest first,
        ties: smaller id), by item id; the rows themselves, where :meth:`refresh` gives similarities.

        What the online item vectors read (:class:`transforms.embedding.OnlineItemVectors`).
        """
        if not self.dirty:
            return {}
        codes = sorted(self.dirty)
        self.dirty = set()
        self._refreshed = True
        id_array = self.vocab.array()
        out: dict[str, Neighbours] = {}
        for code in codes:
            row_codes, row_weights = self.rows.get(code, (EMPTY_CODES, EMPTY_WEIGHTS))
            others = id_array[row_codes]
            idx = top_k(row_weights, others, limit)
            out[id_array[code]] = (others[idx], row_weights[idx])
        return out

    def _lists(self, codes: np.ndarray, owner: np.ndarray, others: np.ndarray, c_ab: np.ndarray, measure: str) -> dict[str, Neighbours]:
        """The top ``neighbours`` by ``measure`` of each item of ``codes`` from its row entries (owner, other, weight)."""
        config = self.config
        sims = pair_similarity(measure, c_ab, self.counts[owner], self.counts[others], config.conditional_alpha)
        keep = sims > 0
        owner, others, sims = owner[keep], others[keep], sims[keep]
        id_array = self.vocab.array()
        out: dict[str, Neighbours] = {id_array[c]: (np.empty(0, dtype=object), EMPTY_WEIGHTS) for c in codes.tolist()}
        for code, idx in batch_top_k(owner, others, sims, config.neighbours, self.vocab):
            out[id_array[code]] = (id_array[others[idx]], sims[idx])
        return out

    # -- state ---------------------------------------------------------------------------

    def to_state(self) -> ItemModelState:
        """The whole model as columns (counts of every item, every owned row, the dirty set)."""
        n = len(self.vocab)
        return self._state(0, np.arange(n, dtype=np.int64), sorted(self.rows))

    def has_changes(self) -> bool:
        """Whether anything changed since the last :meth:`changes` (counts, rows, vocabulary or the dirty set)."""
        return bool(self._changed_counts or self._changed_rows or self._refreshed or self._taken_vocab != len(self.vocab))

    def changes(self) -> ItemModelState:
        """What changed since the last call (or since the model was built or restored), as columns.

        Applying every change in order to the state the model had at that point
        (:meth:`apply_state`) gives its state now.
        """
        state = self._state(self._taken_vocab, np.array(sorted(self._changed_counts), dtype=np.int64), sorted(self._changed_rows))
        self._mark_taken()
        return state

    def _mark_taken(self) -> None:
        self._changed_counts = set()
        self._changed_rows = set()
        self._taken_vocab = len(self.vocab)
        self._refreshed = False

    def _state(self, base: int, count_codes: np.ndarray, row_items: list[int]) -> ItemModelState:
        rows = [self.rows[c] for c in row_items]
        lengths = np.fromiter((len(r[0]) for r in rows), dtype=np.int64, count=len(rows))
        return ItemModelState(
            base=base,
            ids=self.vocab.ids[base:],
            count_codes=count_codes,
            counts=self.counts[count_codes].copy(),
            row_items=np.array(row_items, dtype=np.int64),
            row_ptr=np.r_[0, np.cumsum(lengths)].astype(np.int64),
            row_codes=np.concatenate([r[0] for r in rows]).astype(np.int64) if rows else EMPTY_CODES,
            row_weights=np.concatenate([r[1] for r in rows]).astype(np.float64) if rows else EMPTY_WEIGHTS,
            dirty=np.array(sorted(self.dirty), dtype=np.int64),
        )

    def apply_state(self, state: ItemModelState) -> None:
        """Load a state from :meth:`to_state` or :meth:`changes` (in order): counts and rows overwritten, dirty replaced."""
        if state.base != len(self.vocab):
            raise ValueError(f"item model state extends a vocabulary of {state.base} ids; this model has {len(self.vocab)}")
        self.vocab.encode(state.ids)
        if len(self.vocab) != state.vocabulary_size:
            raise ValueError("item model state repeats an id")
        self._grow()
        self.counts[state.count_codes] = state.counts
        ptr = state.row_ptr.tolist()
        for k, code in enumerate(state.row_items.tolist()):
            self.rows[code] = (state.row_codes[ptr[k] : ptr[k + 1]].copy(), state.row_weights[ptr[k] : ptr[k + 1]].copy())
        self.dirty = set(state.dirty.tolist())
        self._mark_taken()

    @classmethod
    def from_state(cls, config: ModelConfig, state: ItemModelState, owns: Callable[[str], bool] = lambda item: True) -> "ItemModel":
        """A model in ``state`` (a full state, :meth:`to_state`); apply later changes with :meth:`apply_state`."""
        model = cls(config, owns=owns)
        model.apply_state(state)
        return model


def state_from_maps(counts: dict[str, float], rows: dict[str, tuple[Sequence[str], Sequence[float]]], dirty: Sequence[str]) -> ItemModelState:
    """A full :class:`ItemModelState` from id-keyed maps (a backfill snapshot, or the row layout of old job state).

    ``rows[item]`` is ``(other items, weights)`` in any order.
    """
    vocab = Vocabulary(counts)
    row_items = list(rows)
    item_codes = vocab.encode(row_items)
    parts = [vocab.encode(list(rows[item][0])) for item in row_items]
    vocab.encode(list(dirty))
    order = np.argsort(item_codes, kind="stable")
    codes, weights = [], []
    for k in order.tolist():
        row_order = np.argsort(parts[k], kind="stable")
        codes.append(parts[k][row_order])
        weights.append(np.asarray(rows[row_items[k]][1], dtype=np.float64)[row_order])
    lengths = np.fromiter((len(c) for c in codes), dtype=np.int64, count=len(codes))
    return ItemModelState(
        base=0,
        ids=list(vocab.ids),
        count_codes=np.arange(len(counts), dtype=np.int64),
        counts=np.fromiter(counts.values(), dtype=np.float64, count=len(counts)),
        row_items=item_codes[order].astype(np.int64),
        row_ptr=np.r_[0, np.cumsum(lengths)].astype(np.int64),
        row_codes=np.concatenate(codes).astype(np.int64) if codes else EMPTY_CODES,
        row_weights=np.concatenate(weights) if weights else EMPTY_WEIGHTS,
        dirty=np.unique(vocab.encode(list(dirty))),
    )


def maps_from_state(state: ItemModelState) -> tuple[dict[str, float], dict[str, tuple[list[str], list[float]]], list[str]]:
    """A full state as id-keyed maps: (counts, rows as (others, weights) sorted by code, dirty ids sorted)."""
    if state.base:
        raise ValueError("maps_from_state needs a full state (base 0)")
    ids = state.ids
    counts = {ids[c]: float(n) for c, n in zip(state.count_codes.tolist(), state.counts.tolist())}
    ptr = state.row_ptr.tolist()
    others = state.row_codes.tolist()
    weights = state.row_weights.tolist()
    rows = {ids[c]: ([ids[o] for o in others[ptr[k] : ptr[k + 1]]], weights[ptr[k] : ptr[k + 1]]) for k, c in enumerate(state.row_items.tolist())}
    return counts, rows, sorted(ids[c] for c in state.dirty.tolist())
