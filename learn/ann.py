"""Item-to-item neighbours from an approximate-nearest-neighbour index (faiss HNSW), with measured recall.

Similarity is the cosine of the candidate vectors without their bias entry
(the last one), so "similar items" are not merely popular ones.  Recall@k is
the mean share of the exact top-k (a flat inner-product scan over the same
normalised vectors) that the HNSW search returns, over up to
``recall_queries`` items (the item itself excluded from both).
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


@dataclass(frozen=True, eq=False)
class AnnNeighbours:
    neighbours: dict[str, tuple[np.ndarray, np.ndarray]]
    info: dict[str, Any]
    index: Any  # faiss.IndexHNSWFlat over the normalised vectors, row = item row


def unit_rows(candidate: np.ndarray) -> np.ndarray:
    """Candidate vectors without the bias entry, L2-normalised (all-zero rows stay zero)."""
    x = np.ascontiguousarray(candidate[:, :-1], dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def _without_self(ids: np.ndarray, scores: np.ndarray, row: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    keep = (ids != row) & (ids >= 0)
    return ids[keep][:k], scores[keep][:k]


def recall_at_k(approximate: np.ndarray, exact: np.ndarray, query_rows: np.ndarray, k: int) -> float:
    """Mean over queries of ``|approx_k ∩ exact_k| / |exact_k|``.

    ``approximate[q]`` and ``exact[q]`` are item indices (best first, -1 =
    none) found for item ``query_rows[q]``, which is removed from both.
    """
    shares = []
    for row, found, truth in zip(query_rows.tolist(), approximate, exact):
        truth_set = set(_without_self(truth, truth, row, k)[0].tolist())
        if truth_set:
            shares.append(len(truth_set & set(_without_self(found, found, row, k)[0].tolist())) / len(truth_set))
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
) -> AnnNeighbours:
    """The ``k`` nearest items of every item by HNSW search, and the index's recall@k against exact search."""
    began = time.perf_counter()
    x = unit_rows(candidate)
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
    _, truth = exact.search(x[queries], depth)
    recall = recall_at_k(found[queries], truth, queries, k)
    info = {
        "library": "faiss",
        "library_version": faiss.__version__,
        "index": "HNSWFlat",
        "metric": "cosine of candidate vectors without the bias entry",
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
