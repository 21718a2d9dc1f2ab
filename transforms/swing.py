"""Swing item-item similarity (Yang, Zhu and Zhang, "Large Scale Product Graph Construction
for Recommendation in E-commerce", arXiv:2010.05525), with the semantics of Flink ML's
``org.apache.flink.ml.recommendation.swing.Swing``.

For items ``i != j``::

    swing(i, j) = sum over unordered user pairs {u, v}, u != v, u and v in S_i ∩ U_j, of
                  w_u * w_v / (alpha2 + |I_u ∩ I_v|),      w_u = (|I_u| + alpha1) ** -beta

where ``I_u`` is the set of distinct items of user ``u``, ``U_j`` the users of item ``j`` and
``S_i`` the users of ``i`` kept for the computation (all of them, or a sample — below).  Each
unordered pair counts once, as in Flink ML's implementation (its Javadoc writes a double sum
over u and v, but the code loops over ``j > i``).  The score has no unit; it grows with the
number of user pairs that both chose ``i`` and ``j`` and is damped for heavy users (``w_u``)
and for pairs of users who have much in common anyway (``alpha2 + |I_u ∩ I_v|``).

Parameters that change results, as in Flink ML:

* ``min_user_behavior`` / ``max_user_behavior``: users with fewer / more distinct items are
  dropped before anything else (they count neither in pairs nor anywhere else).  Flink ML's
  defaults are 10 / 1000; here the minimum defaults to 1 because shops have many short
  histories (a user with fewer than 2 items cannot form a swing anyway, so 1 and 2 agree).
* ``max_users_per_item``: when item ``i`` has more users, a uniform random sample of that
  many (seeded by ``seed``) is ``S_i``.  Flink ML samples per *main* item the same way (by
  reservoir sampling in arrival order, so its sample differs from ours), which makes the
  result asymmetric once sampling is active; without sampling ``swing(i, j) = swing(j, i)``.
* ``alpha1``, ``alpha2``, ``beta``: defaults follow this project's ``ModelConfig``
  (5, 1, 0.3); Flink ML's are 15, 0, 0.3.

The main item itself is never its own neighbour.  Pairs are found with sparse products: per
main item ``i``, ``C = B B^T`` (``B`` = rows of ``S_i`` in the binary user x item matrix) gives
every ``|I_u ∩ I_v|``, and ``swing(i, j) = 1/2 * b_j^T P b_j`` with ``P_uv = w_u w_v / (alpha2 +
C_uv)``, ``P_uu = 0`` and ``b_j`` the column of ``j`` in ``B`` — for all ``j`` at once.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import scipy.sparse as sp

from transforms.content import top_k_positions
from transforms.usercf import encode_ids

log = logging.getLogger(__name__)

# Per main item, the candidate columns are processed in chunks of at most this many
# (user x column) cells, so a chunk's dense work array stays under ~16 MB.  (A dense BLAS
# product of the chunk was tried and was 4x slower on ML-100K even where 6% of cells are
# set: it does m^2 x columns flops where the sparse product does nnz x m.)
CHUNK_CELLS = 2_000_000

SimilarItems = dict[str, list[tuple[str, float]]]


def _check_non_negative_int(name: str, value: object, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def swing_similarity(
    users: np.ndarray,
    items: np.ndarray,
    alpha1: float = 5.0,
    alpha2: float = 1.0,
    beta: float = 0.3,
    max_users_per_item: int = 1000,
    top_k: int | None = None,
    min_user_behavior: int = 1,
    max_user_behavior: int = 1000,
    seed: int = 0,
) -> SimilarItems:
    """Swing neighbours of every item: ``{item_id: [(other_item_id, swing), ...]}``.

    ``users[n]`` interacted with ``items[n]`` (repeats count once).  Every item in the input
    is a key; its list holds the items with ``swing > 0``, best first, equal scores in
    ascending item id, at most ``top_k`` of them (all when ``top_k`` is None).  See the module
    docstring for the formula and the parameters.

    Cost: per main item with ``m`` kept users holding ``nnz`` interactions in total, a sparse
    ``m x m`` product for the intersections and ``nnz * m`` multiply-adds for the scores;
    memory O(m^2 + nnz + CHUNK_CELLS).
    """
    for name, value in (("alpha1", alpha1), ("alpha2", alpha2), ("beta", beta)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    if alpha1 < 0 or alpha2 < 0:
        raise ValueError(f"alpha1 and alpha2 must be >= 0, got {alpha1!r} and {alpha2!r}")
    _check_non_negative_int("max_users_per_item", max_users_per_item, minimum=1)
    _check_non_negative_int("min_user_behavior", min_user_behavior)
    _check_non_negative_int("max_user_behavior", max_user_behavior)
    if top_k is not None:
        _check_non_negative_int("top_k", top_k)
    if max_user_behavior < min_user_behavior:
        raise ValueError(
            f"max_user_behavior ({max_user_behavior}) must be >= min_user_behavior ({min_user_behavior})"
        )

    user_ids, user_codes = encode_ids(users, "users")
    item_ids, item_codes = encode_ids(items, "items")
    if user_codes.size != item_codes.size:
        raise ValueError(f"users and items must have the same length, got {user_codes.size} and {item_codes.size}")
    out: SimilarItems = {item_id: [] for item_id in item_ids}
    limit = item_ids.size if top_k is None else top_k
    if item_ids.size == 0 or limit == 0:
        return out

    interactions = sp.coo_matrix(
        (np.ones(user_codes.size), (user_codes, item_codes)), shape=(user_ids.size, item_ids.size)
    ).tocsr()
    interactions.sum_duplicates()
    interactions.data[:] = 1.0  # a repeated (user, item) counts once
    degree = np.diff(interactions.indptr)
    kept_user = (degree >= min_user_behavior) & (degree <= max_user_behavior)
    interactions = sp.csr_matrix(sp.diags(kept_user.astype(np.float64)) @ interactions)
    interactions.eliminate_zeros()
    interactions.sort_indices()
    log.debug("swing: %d of %d users kept, %d interactions", int(kept_user.sum()), user_ids.size, interactions.nnz)

    # |I_u| ** -beta after adding alpha1; dropped users have no rows left, so their weight
    # is never used (the where= avoids 0 ** -beta for them).
    base = degree + float(alpha1)
    user_weight = np.power(base, -float(beta), out=np.zeros_like(base, dtype=np.float64), where=base > 0)
    users_of_item = interactions.tocsc()
    users_of_item.sort_indices()
    rng = np.random.default_rng(seed)

    for main in range(item_ids.size):
        sample = users_of_item.indices[users_of_item.indptr[main] : users_of_item.indptr[main + 1]]
        if sample.size > max_users_per_item:
            sample = np.sort(rng.choice(sample, size=max_users_per_item, replace=False))
        if sample.size < 2:
            continue
        columns, scores = _swing_row(interactions, sample, user_weight, float(alpha2))
        keep = (columns != main) & (scores > 0.0)
        columns, scores = columns[keep], scores[keep]
        best = top_k_positions(scores, limit)
        out[item_ids[main]] = [(item_ids[c], float(s)) for c, s in zip(columns[best], scores[best])]
    return out


def _swing_row(
    interactions: sp.csr_matrix, sample: np.ndarray, user_weight: np.ndarray, alpha2: float
) -> tuple[np.ndarray, np.ndarray]:
    """Swing of one main item (whose kept users are ``sample``) with every item they touched.

    Returns the touched item columns (ascending) and their swing scores, main item included.
    """
    rows = interactions[sample]  # m x items, binary
    m = sample.size
    columns, local = np.unique(rows.indices, return_inverse=True)
    local_rows = sp.csr_matrix((rows.data, local.ravel(), rows.indptr), shape=(m, columns.size))
    common = (local_rows @ local_rows.T).toarray()  # |I_u ∩ I_v| for every pair (>= 1: the main item)
    weights = user_weight[sample]
    pair_weight = np.outer(weights, weights) / (alpha2 + common)
    np.fill_diagonal(pair_weight, 0.0)  # u != v

    by_column = local_rows.T.tocsr()  # columns x m: row j is b_j
    scores = np.empty(columns.size, dtype=np.float64)
    chunk = max(1, CHUNK_CELLS // m)
    for start in range(0, columns.size, chunk):
        part = by_column[start : start + chunk]
        # Row j of `weighted` is (P b_j)^T (P is symmetric); b_j^T P b_j only needs it
        # where b_j is set, so gather those cells and sum them per row.
        weighted = part @ pair_weight
        row_of_entry = np.repeat(np.arange(part.shape[0]), np.diff(part.indptr))
        scores[start : start + part.shape[0]] = np.bincount(
            row_of_entry, weights=weighted[row_of_entry, part.indices] * part.data, minlength=part.shape[0]
        )
    # Each unordered pair {u, v} appears twice in b_j^T P b_j (as P_uv and P_vu).
    return columns, 0.5 * scores
