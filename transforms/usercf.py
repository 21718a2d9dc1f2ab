"""User-based collaborative filtering on a sparse user x item matrix.

``R`` is the user x item matrix of summed interaction weights (CSR; duplicates of a
(user, item) pair are added).  For a requested user ``u``:

* ``sim(u, v) = R_u . R_v / (|R_u| |R_v|)`` — cosine over the users' weight rows, computed
  only for the requested users as a sparse product of their normalised rows with ``R^T``
  (no dense users x items pivot is ever built);
* the neighbours ``N_k(u)`` are the ``k`` users ``v != u`` with the largest ``sim(u, v) > 0``
  (equal similarities broken by ascending user id);
* ``score(u, i) = sum over v in N_k(u) of sim(u, v) * R_v,i`` — in the units of the weights;
* the list is the ``n`` items with the largest ``score > 0`` (equal scores in ascending item
  id), optionally without the items ``u`` already has (a stored, non-zero ``R_u,i``).

Requested users are processed in blocks so memory stays bounded by the block size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from transforms.content import top_k_positions

log = logging.getLogger(__name__)

DEFAULT_BLOCK_USERS = 512

Recommendations = dict[str, list[tuple[str, float]]]


def encode_ids(values: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Distinct string ids in ascending order and the code of each value.

    Raises ValueError naming the first offending position when ``values`` is not a 1-D
    array of strings.
    """
    array = np.asarray(values, dtype=object)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {array.shape}")
    is_str = np.fromiter((isinstance(value, str) for value in array), dtype=bool, count=array.size)
    if not is_str.all():
        position = int(np.flatnonzero(~is_str)[0])
        raise ValueError(
            f"{name} must hold strings; position {position} is {type(array[position]).__name__} {array[position]!r}"
        )
    if array.size == 0:
        return np.empty(0, dtype=object), np.empty(0, dtype=np.int64)
    uniques, codes = np.unique(array, return_inverse=True)
    return uniques.astype(object), codes.astype(np.int64)


def _locate(sorted_ids: np.ndarray, wanted: str) -> int | None:
    if not isinstance(wanted, str) or sorted_ids.size == 0:
        return None
    position = int(np.searchsorted(sorted_ids, wanted))
    if position < sorted_ids.size and sorted_ids[position] == wanted:
        return position
    return None


@dataclass(frozen=True, eq=False)  # numpy/scipy fields: identity equality
class UserKNN:
    """A fitted user-kNN model: ids in ascending order and the weight matrix ``R``.

    ``ratings[u, i]`` is the summed weight of ``user_ids[u]`` on ``item_ids[i]`` (CSR with
    sorted indices, explicit zeros removed); ``norms[u]`` is ``|R_u|``.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    ratings: sp.csr_matrix
    norms: np.ndarray

    @classmethod
    def fit(cls, users: np.ndarray, items: np.ndarray, weights: np.ndarray) -> "UserKNN":
        """Build ``R`` from parallel arrays; repeated (user, item) weights are summed.

        ``weights`` must be finite; negative weights (negative feedback) are allowed and
        take part in the cosine.  A pair whose weights sum to exactly zero is dropped.
        """
        user_ids, user_codes = encode_ids(users, "users")
        item_ids, item_codes = encode_ids(items, "items")
        values = np.asarray(weights, dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(f"weights must be a 1-D array, got shape {values.shape}")
        if not (user_codes.size == item_codes.size == values.size):
            raise ValueError(
                f"users, items and weights must have the same length, got {user_codes.size}, "
                f"{item_codes.size} and {values.size}"
            )
        if not np.isfinite(values).all():
            position = int(np.flatnonzero(~np.isfinite(values))[0])
            raise ValueError(f"weights must be finite; position {position} is {values[position]!r}")
        ratings = sp.coo_matrix(
            (values, (user_codes, item_codes)), shape=(user_ids.size, item_ids.size)
        ).tocsr()
        ratings.sum_duplicates()
        ratings.eliminate_zeros()
        ratings.sort_indices()
        norms = np.sqrt(np.asarray(ratings.multiply(ratings).sum(axis=1)).ravel())
        log.debug("user-kNN fit: %d users, %d items, %d entries", user_ids.size, item_ids.size, ratings.nnz)
        return cls(user_ids=user_ids, item_ids=item_ids, ratings=ratings, norms=norms)

    @cached_property
    def normalised(self) -> sp.csr_matrix:
        """``R`` with every row divided by its norm (cached: callers often ask user by user)."""
        # Users whose weights cancel out to a zero row keep norm 0 and so similarity 0.
        inverse = np.divide(1.0, self.norms, out=np.zeros_like(self.norms), where=self.norms > 0)
        return sp.csr_matrix(sp.diags(inverse) @ self.ratings)

    @cached_property
    def normalised_transposed(self) -> sp.csr_matrix:
        """The transpose of :attr:`normalised` as CSR (items x users), for the similarity product."""
        return self.normalised.T.tocsr()

    def similarities(self, user_ids: Sequence[str]) -> sp.csr_matrix:
        """Cosine rows ``sim(u, .)`` for the given known users (rows in the given order)."""
        rows = [self._row(user_id) for user_id in user_ids]
        unknown = [user_id for user_id, row in zip(user_ids, rows) if row is None]
        if unknown:
            raise KeyError(f"unknown users: {unknown[:5]!r}")
        return (self.normalised[np.asarray(rows, dtype=np.int64)] @ self.normalised_transposed).tocsr()

    def _row(self, user_id: str) -> int | None:
        return _locate(self.user_ids, user_id)

    def recommend(
        self,
        user_ids: Sequence[str],
        n: int,
        k_neighbours: int = 50,
        exclude_seen: bool = True,
        block_users: int = DEFAULT_BLOCK_USERS,
    ) -> Recommendations:
        """Top-``n`` ``(item_id, score)`` lists for each of ``user_ids`` (see module docstring).

        Unknown users get an empty list.  Cost per block of ``b`` users: one sparse product
        ``b x users`` (their co-rating users), per-row neighbour selection by argpartition,
        and one sparse product ``(b x users) @ R`` for the scores.
        """
        for name, value in (("n", n), ("k_neighbours", k_neighbours), ("block_users", block_users)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if block_users == 0:
            raise ValueError("block_users must be >= 1")
        out: Recommendations = {user_id: [] for user_id in user_ids}
        rows = np.asarray(
            sorted({row for row in (self._row(user_id) for user_id in out) if row is not None}), dtype=np.int64
        )
        if n == 0 or k_neighbours == 0 or rows.size == 0:
            return out
        for start in range(0, rows.size, block_users):
            block = rows[start : start + block_users]
            similarities = self.normalised[block] @ self.normalised_transposed
            neighbours = self._neighbour_matrix(similarities, block, k_neighbours)
            scores = (neighbours @ self.ratings).tocsr()
            for offset, row in enumerate(block):
                lo, hi = scores.indptr[offset], scores.indptr[offset + 1]
                columns, values = scores.indices[lo:hi], scores.data[lo:hi]
                keep = values > 0.0
                if exclude_seen:
                    seen = self.ratings.indices[self.ratings.indptr[row] : self.ratings.indptr[row + 1]]
                    keep &= ~np.isin(columns, seen, assume_unique=True)
                columns, values = columns[keep], values[keep]
                best = top_k_positions(values, n, tie_keys=columns)  # column order == item id order
                out[self.user_ids[row]] = [(self.item_ids[c], float(v)) for c, v in zip(columns[best], values[best])]
        return out

    def _neighbour_matrix(self, similarities: sp.spmatrix, block: np.ndarray, k: int) -> sp.csr_matrix:
        """Keep, per row, the ``k`` largest positive similarities to users other than itself."""
        similarities = similarities.tocsr()
        kept_rows: list[np.ndarray] = []
        kept_columns: list[np.ndarray] = []
        kept_values: list[np.ndarray] = []
        for offset, row in enumerate(block):
            lo, hi = similarities.indptr[offset], similarities.indptr[offset + 1]
            columns, values = similarities.indices[lo:hi], similarities.data[lo:hi]
            keep = (columns != row) & (values > 0.0)
            columns, values = columns[keep], values[keep]
            best = top_k_positions(values, k, tie_keys=columns)  # column order == user id order
            kept_rows.append(np.full(best.size, offset, dtype=np.int64))
            kept_columns.append(columns[best])
            kept_values.append(values[best])
        return sp.csr_matrix(
            (np.concatenate(kept_values), (np.concatenate(kept_rows), np.concatenate(kept_columns))),
            shape=(block.size, self.user_ids.size),
        )
