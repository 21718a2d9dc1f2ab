"""Item-to-item neighbours from an approximate-nearest-neighbour index (faiss HNSW), with measured recall.

Similarity is the cosine of the candidate vectors - without their bias
entry (the last one) under the mean rule, so "similar items" are not merely
popular ones; whole under fold_in, where the last entry is a learned
dimension like the others.  Recall@k is the mean share of the exact top-k (a
flat inner-product scan over the same normalised vectors) that the HNSW
search returns, over up to ``recall_queries`` items (the item itself
excluded from both).  Ties count: a returned item as similar as the exact
k-th one is a correct answer, since items with the same side features and no
events of their own share one vector and any of them is as good as another.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

log = logging.getLogger(__name__)

RECALL_QUERIES = 10_000
# Cosines this close to the exact k-th one count as ties (float32 search).
TIE_TOLERANCE = 1e-5


@dataclass(frozen=True, eq=False)
class AnnNeighbours:
    neighbours: dict[str, tuple[np.ndarray, np.ndarray]]
    info: dict[str, Any]
    index: Any  # faiss.IndexHNSWFlat over the normalised vectors, row = item row


def unit_rows(candidate: np.ndarray, has_bias: bool = True) -> np.ndarray:
    """Candidate vectors (without the bias entry when ``has_bias``), L2-normalised (all-zero rows stay zero)."""
    x = np.ascontiguousarray(candidate[:, :-1] if has_bias else candidate, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def _without_self(ids: np.ndarray, scores: np.ndarray, row: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    keep = (ids != row) & (ids >= 0)
    return ids[keep][:k], scores[keep][:k]


def recall_at_k(
    found: np.ndarray, found_scores: np.ndarray, truth: np.ndarray, truth_scores: np.ndarray, query_rows: np.ndarray, k: int
) -> float:
    """Mean over queries of the share of the exact top-k that the search matched.

    ``found[q]`` / ``truth[q]`` are item indices (best first, -1 = none) with
    their cosines, from the search and from exact search, for item
    ``query_rows[q]``, which is removed from both.  A found item matches when
    it is in the exact top-k or ties its k-th cosine (:data:`TIE_TOLERANCE`).
    """
    shares = []
    for row, ids, scores, true_ids, true_scores in zip(query_rows.tolist(), found, found_scores, truth, truth_scores):
        true_ids, true_scores = _without_self(true_ids, true_scores, row, k)
        if not len(true_ids):
            continue
        ids, scores = _without_self(ids, scores, row, k)
        exact = set(true_ids.tolist())
        kth = float(true_scores[-1])
        matched = sum(1 for i, s in zip(ids.tolist(), scores.tolist()) if i in exact or s >= kth - TIE_TOLERANCE)
        shares.append(min(matched, len(true_ids)) / len(true_ids))
    return float(np.mean(shares)) if shares else 1.0


def build_neighbours(
    candidate: np.ndarray,
    item_ids: np.ndarray,
    k: int,
    m: int = 32,
    ef_construction: int = 200,
    ef_search: int = 128,
    seed: int = 42,
    recall_queries: int = RECALL_QUERIES,
    has_bias: bool = True,
) -> AnnNeighbours:
    """The ``k`` nearest items of every item by HNSW search, and the index's recall@k against exact search.

    ``has_bias``: the last candidate entry is the item bias (mean rule), left out of the cosine.
    """
    began = time.perf_counter()
    x = unit_rows(candidate, has_bias)
    n, dim = x.shape
    index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.add(x)
    index.hnsw.efSearch = max(ef_search, k + 1)
    depth = min(k + 1, n)
    scores, found = index.search(x, depth)
    built = time.perf_counter() - began
    neighbours = {}
    for row in range(n):
        ids, sims = _without_self(found[row], scores[row], row, k)
        neighbours[item_ids[row]] = (item_ids[ids], sims.astype(np.float32))
    queries = np.sort(np.random.default_rng(seed).choice(n, size=min(n, recall_queries), replace=False))
    exact = faiss.IndexFlatIP(dim)
    exact.add(x)
    truth_scores, truth = exact.search(x[queries], depth)
    recall = recall_at_k(found[queries], scores[queries], truth, truth_scores, queries, k)
    info = {
        "library": "faiss",
        "library_version": faiss.__version__,
        "index": "HNSWFlat",
        "metric": "cosine of candidate vectors" + (" without the bias entry" if has_bias else ""),
        "m": m,
        "ef_construction": ef_construction,
        "ef_search": index.hnsw.efSearch,
        "k": k,
        "recall_at_k": recall,
        "recall_queries": len(queries),
        "build_and_search_seconds": round(built, 3),
    }
    log.info("ANN neighbours: %d items, recall@%d %.4f against exact search", n, k, recall)
    return AnnNeighbours(neighbours=neighbours, info=info, index=index)
