"""Content similarity between catalog items: TF-IDF vectors and cosine neighbours.

Every item becomes a bag of tokens:

* the lowercased alphanumeric words of its title (``"Red Shoe 42"`` -> ``red``, ``shoe``, ``42``);
* every prefix of its category path (``"Fashion/Shoes"`` -> ``cat:fashion``, ``cat:fashion/shoes``),
  so items in the same sub-category share more tokens than items that only share the top level;
* its brand (``brand:acme``) and each tag (``tag:summer``), lowercased.

Weights are TF-IDF with the smooth idf ``idf(t) = ln((1 + N) / (1 + df(t))) + 1`` where ``N``
is the number of items in the index and ``df(t)`` the number of items containing ``t``; the
term frequency is the raw count of ``t`` in the item (or ``1 + ln(count)`` with
``sublinear_tf``).  Rows are L2-normalised, so the cosine similarity of two items is the dot
product of their rows, a unitless number in ``[0, 1]`` (all weights are positive).

Ranking is deterministic: items are stored in ascending id order, and equal scores are
broken by that order (:func:`top_k_positions` with the row index as tie key), so the same catalog always yields the same
neighbour lists whatever order its items arrived in.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from transforms.catalog import CATEGORY_SEPARATOR, CatalogItem

log = logging.getLogger(__name__)

# Words are runs of Unicode letters and digits; the underscore is excluded so
# "red_shoe" splits like "red shoe".
_WORD = re.compile(r"[^\W_]+")

# Default work budget of one row block in neighbours_all: an upper bound on the
# number of stored entries of the block's similarity product (each ~12 bytes in
# CSR), so 4M entries keep a block under ~50 MB however dense the catalog is.
DEFAULT_BLOCK_ENTRIES = 4_000_000

Neighbours = dict[str, list[tuple[str, float]]]


def top_k_positions(scores: np.ndarray, k: int, tie_keys: np.ndarray | None = None) -> np.ndarray:
    """Positions of the ``k`` largest ``scores``, best first; equal scores by ascending tie key.

    ``tie_keys[p]`` (distinct integers, e.g. item indices) orders equal scores; without it
    the position itself is the key.  Selection is O(n) with ``np.argpartition``; only the (at
    most ``k``) chosen scores are sorted.  Ties at the cut are resolved by the key as well,
    so the result never depends on how argpartition happened to order equal values.
    """
    n = int(scores.shape[0])
    if k <= 0 or n == 0:
        return np.empty(0, dtype=np.intp)
    keys = np.arange(n) if tie_keys is None else np.asarray(tie_keys)
    if k < n:
        # argpartition places the k-th largest value at position n - k.
        kth_value = scores[np.argpartition(scores, n - k)[n - k]]
        above = np.flatnonzero(scores > kth_value)
        tied = np.flatnonzero(scores == kth_value)
        wanted = k - above.size  # >= 1: the k-th value itself is tied
        if tied.size > wanted:
            tied = tied[np.argpartition(keys[tied], wanted - 1)[:wanted]]
        chosen = np.concatenate([above, tied])
    else:
        chosen = np.arange(n, dtype=np.intp)
    return chosen[np.lexsort((keys[chosen], -scores[chosen]))]


def item_tokens(item: CatalogItem) -> list[str]:
    """The tokens of one item (with repeats, which count as term frequency)."""
    tokens = _WORD.findall(item.title.lower())
    path = [segment.strip().lower() for segment in item.category.split(CATEGORY_SEPARATOR)]
    path = [segment for segment in path if segment]
    for depth in range(1, len(path) + 1):
        tokens.append("cat:" + CATEGORY_SEPARATOR.join(path[:depth]))
    brand = item.brand.strip().lower()
    if brand:
        tokens.append("brand:" + brand)
    for tag in item.tags:
        tag = tag.strip().lower()
        if tag:
            tokens.append("tag:" + tag)
    return tokens


def price_bucket_edges(catalog: Iterable[CatalogItem], buckets: int) -> dict[str, np.ndarray]:
    """Per top category, the inner quantile edges of log(1 + price) splitting its priced items into ``buckets``.

    The learned embeddings' price feature (:func:`feature_tokens`): the trainer
    computes the edges on its catalog and the export carries them, so serving
    buckets a new item's price with the very same edges.
    """
    prices: dict[str, list[float]] = {}
    for item in catalog:
        if item.price == item.price:  # not NaN
            prices.setdefault(item.top_category, []).append(float(np.log1p(item.price)))
    inner = np.linspace(0.0, 1.0, buckets + 1)[1:-1]
    return {top: np.quantile(np.array(values), inner) for top, values in prices.items()}


def feature_tokens(item: CatalogItem, edges: Mapping[str, np.ndarray]) -> list[str]:
    """Side-feature tokens of the learned embeddings: :func:`item_tokens` plus ``price:<top>:<bucket>`` when priced.

    The bucket is the number of ``edges[top]`` (:func:`price_bucket_edges`)
    at or below log(1 + price); a top category without edges gets no price token.
    """
    tokens = item_tokens(item)
    cut = edges.get(item.top_category)
    if item.price == item.price and cut is not None:
        tokens.append(f"price:{item.top_category}:{int(np.searchsorted(cut, np.log1p(item.price), side='right'))}")
    return tokens


def feature_bag(item: CatalogItem, edges: Mapping[str, np.ndarray]) -> list[str]:
    """The distinct :func:`feature_tokens` of ``item``, sorted: the bag whose embeddings the item towers average."""
    return sorted(set(feature_tokens(item, edges)))


def _row_blocks(row_work: np.ndarray, budget: int) -> Iterator[tuple[int, int]]:
    """Split rows into consecutive ``[start, end)`` blocks whose summed work is <= budget.

    A single row heavier than the budget still forms a block of its own.
    """
    cumulative = np.cumsum(row_work, dtype=np.float64)
    n = cumulative.size
    start = 0
    while start < n:
        done_before = cumulative[start - 1] if start else 0.0
        end = int(np.searchsorted(cumulative, done_before + budget, side="right"))
        end = max(end, start + 1)
        yield start, end
        start = end


def _latest(items: Sequence[CatalogItem], caller: str) -> dict[str, CatalogItem]:
    """``items`` by id, the later one winning (catalog upsert semantics)."""
    latest: dict[str, CatalogItem] = {}
    for item in items:
        if not isinstance(item, CatalogItem):
            raise TypeError(f"ContentIndex.{caller} expects CatalogItem, got {type(item).__name__}")
        latest[item.item_id] = item
    return latest


def _count_matrix(rows: np.ndarray, columns: np.ndarray, shape: tuple[int, int], counts: np.ndarray | None = None) -> sp.csr_matrix:
    """Term counts in canonical CSR (duplicates summed, indices sorted): ``counts`` for the first
    entries (kept counts), 1 for each of the rest (one token occurrence each)."""
    data = np.ones(columns.size)
    if counts is not None:
        data[: counts.size] = counts
    matrix = sp.coo_matrix((data, (rows, columns)), shape=shape).tocsr()
    matrix.sum_duplicates()
    matrix.sort_indices()
    return matrix


@dataclass(frozen=True, eq=False)  # numpy/scipy fields: identity equality
class ContentIndex:
    """TF-IDF vectors of a catalog and cosine neighbour queries over them.

    ``item_ids[r]`` is the item of row ``r`` of ``matrix`` (ascending id order);
    ``vocabulary`` maps a token to its column; ``idf[c]`` is the idf of column ``c``.
    ``matrix`` is CSR, ``len(item_ids) x len(vocabulary)``, rows L2-normalised (an item
    with no tokens has an all-zero row and so no neighbours).
    """

    item_ids: np.ndarray
    vocabulary: Mapping[str, int]
    idf: np.ndarray
    matrix: sp.csr_matrix
    items: Mapping[str, CatalogItem]
    # The raw term counts (same shape and layout as ``matrix``) and the tokens in column order:
    # what :meth:`upsert` keeps, so it tokenises only the upserted items.
    counts: sp.csr_matrix
    terms: np.ndarray
    sublinear_tf: bool = False

    @classmethod
    def build(cls, items: Sequence[CatalogItem], sublinear_tf: bool = False) -> "ContentIndex":
        """Index ``items``; when an id repeats, the later item wins (catalog upsert semantics).

        Cost: O(total tokens) to tokenise and build the sparse matrix, plus sorting the
        item ids and the vocabulary.
        """
        latest = _latest(items, "build")
        item_ids = np.array(sorted(latest), dtype=object)
        first_seen: dict[str, int] = {}
        term_codes: list[int] = []
        row_of_term: list[int] = []
        for row, item_id in enumerate(item_ids):
            for token in item_tokens(latest[item_id]):
                term_codes.append(first_seen.setdefault(token, len(first_seen)))
                row_of_term.append(row)
        # Columns in sorted token order, so the matrix (and the summation order of every
        # dot product) does not depend on the order in which items arrived.
        terms = np.array(sorted(first_seen), dtype=object)
        column_of_code = np.empty(len(first_seen), dtype=np.int64)
        for column, token in enumerate(terms.tolist()):
            column_of_code[first_seen[token]] = column
        columns = column_of_code[np.asarray(term_codes, dtype=np.int64)] if term_codes else np.empty(0, np.int64)
        counts = _count_matrix(np.asarray(row_of_term, dtype=np.int64), columns, (item_ids.size, terms.size))
        return cls._weighted(item_ids, terms, counts, latest, sublinear_tf)

    def upsert(self, items: Sequence[CatalogItem]) -> "ContentIndex":
        """A new index with ``items`` added or replaced; this index is left unchanged.

        Equal to :meth:`build` of the merged catalog (the same arrays, bit for bit:
        tests/transforms/test_content.py).  A single upsert changes N and possibly
        document frequencies, and so the idf and norm of every row; those are
        recomputed from the kept term counts in O(entries) array work, while only the
        upserted items are tokenised (a full rebuild tokenised the whole catalog in
        Python at every upsert: 33 ms per upsert on a 7.6k-item catalog).
        """
        upserted = _latest(items, "upsert")
        merged = dict(self.items)
        merged.update(upserted)
        # Rows: the old items not upserted keep their counts; ids new to the index are inserted in order.
        old_ids = self.item_ids
        keep_row = np.ones(old_ids.size, dtype=bool)
        replaced = [row for row in map(self.row_of, upserted) if row is not None]
        keep_row[replaced] = False
        kept_rows = np.flatnonzero(keep_row)
        added_ids = np.array(sorted(i for i in upserted if i not in self.items), dtype=object)
        added_at = np.searchsorted(old_ids, added_ids)
        item_ids = np.insert(old_ids, added_at, added_ids) if added_ids.size else old_ids
        # Columns: the tokens the kept rows still use, plus the upserted items' tokens, sorted.
        kept = self.counts[kept_rows]
        used = np.zeros(self.terms.size, dtype=bool)
        used[kept.indices] = True
        kept_terms = self.terms[used]
        tokens = {item_id: item_tokens(item) for item_id, item in upserted.items()}
        every_column = bool(used.all())
        known = self.vocabulary if every_column else set(kept_terms.tolist())
        fresh = np.array(sorted({t for ts in tokens.values() for t in ts if t not in known}), dtype=object)
        at = np.searchsorted(kept_terms, fresh) if fresh.size else np.empty(0, dtype=np.intp)
        terms = np.insert(kept_terms, at, fresh) if fresh.size else kept_terms
        # An old column's new place: its rank among the used columns, moved right by the fresh tokens before it.
        used_rank = np.cumsum(used) - 1
        kept_column = used_rank + np.searchsorted(at, used_rank, side="right")
        same_columns = every_column and not fresh.size
        vocabulary = self.vocabulary if same_columns else {token: column for column, token in enumerate(terms.tolist())}
        # Entries: the kept rows' (moved) plus the upserted items' (tokenised now).
        # A kept row's new place: moved down by the added ids inserted at or before it.
        row_shift = np.searchsorted(added_at, kept_rows, side="right") if added_ids.size else 0
        rows = [np.repeat(kept_rows + row_shift, np.diff(kept.indptr))]
        columns = [kept_column[kept.indices]]
        for item_id, bag in tokens.items():
            row = int(np.searchsorted(item_ids, item_id))
            rows.append(np.full(len(bag), row, dtype=np.int64))
            columns.append(np.fromiter(map(vocabulary.__getitem__, bag), dtype=np.int64, count=len(bag)))
        counts = _count_matrix(np.concatenate(rows).astype(np.int64), np.concatenate(columns), (item_ids.size, terms.size), kept.data)
        return ContentIndex._weighted(item_ids, terms, counts, merged, self.sublinear_tf, vocabulary)

    @classmethod
    def _weighted(
        cls, item_ids: np.ndarray, terms: np.ndarray, counts: sp.csr_matrix, items: Mapping[str, CatalogItem], sublinear_tf: bool, vocabulary: Mapping[str, int] | None = None
    ) -> "ContentIndex":
        """The index of ``counts`` (canonical CSR: sorted, summed): smooth idf, tf (raw or sublinear), rows L2-normalised."""
        n_items, n_terms = counts.shape
        df = np.bincount(counts.indices, minlength=n_terms).astype(np.float64)
        idf = np.log((1.0 + n_items) / (1.0 + df)) + 1.0
        tf = 1.0 + np.log(counts.data) if sublinear_tf else counts.data
        weights = tf * idf[counts.indices]
        rows = np.repeat(np.arange(n_items), np.diff(counts.indptr))
        norms = np.sqrt(np.bincount(rows, weights=weights * weights, minlength=n_items))
        weights = weights / norms[rows]  # every stored entry's row has a norm > 0
        matrix = sp.csr_matrix((weights, counts.indices.copy(), counts.indptr.copy()), shape=(n_items, n_terms))
        log.debug("content index: %d items, %d terms, %d entries", n_items, n_terms, matrix.nnz)
        return cls(
            item_ids=item_ids,
            vocabulary=vocabulary if vocabulary is not None else {token: column for column, token in enumerate(terms.tolist())},
            idf=idf,
            matrix=matrix,
            items=items,
            sublinear_tf=sublinear_tf,
            counts=counts,
            terms=terms,
        )

    def __len__(self) -> int:
        return int(self.item_ids.size)

    def row_of(self, item_id: str) -> int | None:
        """Row of ``item_id`` in ``matrix``, or None when it is not indexed."""
        if not isinstance(item_id, str):
            return None
        position = int(np.searchsorted(self.item_ids, item_id)) if self.item_ids.size else 0
        if position < self.item_ids.size and self.item_ids[position] == item_id:
            return position
        return None

    def cosine(self, a: str, b: str) -> float:
        """Cosine similarity of two indexed items (0.0 when either is unknown)."""
        row_a, row_b = self.row_of(a), self.row_of(b)
        if row_a is None or row_b is None:
            return 0.0
        return float(self.matrix[row_a].multiply(self.matrix[row_b]).sum())

    def neighbours(
        self, item_ids: Sequence[str], k: int, block_entries: int = DEFAULT_BLOCK_ENTRIES
    ) -> Neighbours:
        """Top-``k`` most similar other items of each of ``item_ids``.

        Each list holds ``(item_id, cosine)`` with cosine > 0, best first, equal cosines in
        ascending item id.  Unknown ids get an empty list.  ``block_entries`` bounds the
        work and memory of one block (see :data:`DEFAULT_BLOCK_ENTRIES`).
        """
        _check_k(k)
        out: Neighbours = {item_id: [] for item_id in item_ids}
        rows = sorted({row for row in (self.row_of(item_id) for item_id in out) if row is not None})
        if k == 0 or not rows:
            return out
        for row, neighbours in self._neighbour_rows(np.asarray(rows, dtype=np.int64), k, block_entries):
            out[self.item_ids[row]] = neighbours
        return out

    def neighbours_all(self, k: int, block_entries: int = DEFAULT_BLOCK_ENTRIES) -> Neighbours:
        """:meth:`neighbours` for every indexed item, computed in bounded row blocks.

        Cost: O(sum over tokens of df(t)^2) multiply-adds in total — the number of
        (item, item, shared token) triples — and O(block_entries) memory at a time.
        """
        _check_k(k)
        out: Neighbours = {item_id: [] for item_id in self.item_ids}
        if k == 0:
            return out
        for row, neighbours in self._neighbour_rows(np.arange(len(self), dtype=np.int64), k, block_entries):
            out[self.item_ids[row]] = neighbours
        return out

    def _neighbour_rows(
        self, rows: np.ndarray, k: int, block_entries: int
    ) -> Iterator[tuple[int, list[tuple[str, float]]]]:
        if block_entries < 1:
            raise ValueError(f"block_entries must be >= 1, got {block_entries}")
        matrix = self.matrix
        transposed = matrix.T.tocsr()
        # Upper bound of the stored entries of row r's similarity row: the summed df of
        # its tokens (every item sharing a token may be a neighbour).
        df = np.diff(transposed.indptr).astype(np.float64)
        row_work = np.bincount(
            np.repeat(np.arange(len(self)), np.diff(matrix.indptr)),
            weights=df[matrix.indices],
            minlength=len(self),
        )[rows]
        for start, end in _row_blocks(row_work, block_entries):
            block_rows = rows[start:end]
            similarities = (matrix[block_rows] @ transposed).tocsr()
            for offset, row in enumerate(block_rows):
                lo, hi = similarities.indptr[offset], similarities.indptr[offset + 1]
                columns = similarities.indices[lo:hi]
                values = similarities.data[lo:hi]
                keep = (columns != row) & (values > 0.0)
                columns, values = columns[keep], values[keep]
                best = top_k_positions(values, k, tie_keys=columns)  # column order == id order
                yield int(row), [(self.item_ids[c], float(v)) for c, v in zip(columns[best], values[best])]


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be an integer >= 0, got {k!r}")
