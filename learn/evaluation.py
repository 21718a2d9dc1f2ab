"""Ranking quality of learned vectors on held-out items (NumPy; used for validation and the msr benchmark).

Lists are ranked exactly as :class:`transforms.embedding.EmbeddingModel.top`
does (dot product with the candidate vectors, the user's seen items removed,
ties by item id) and scored with :func:`transforms.metrics.ranking_metrics`.
"""

from __future__ import annotations

from typing import Collection, Mapping

import numpy as np

from transforms import metrics as M
from transforms.similarity import top_k

# Users scored per matrix product (bounds memory at users x items float64).
SCORE_BLOCK = 512


def top_lists(
    users: list[str],
    vectors: np.ndarray,
    candidate: np.ndarray,
    item_ids: np.ndarray,
    exclude_rows: Mapping[str, np.ndarray],
    k: int,
) -> dict[str, list[str]]:
    """Each user's ``k`` best items by ``vectors[u] . candidate[j]`` without ``exclude_rows[user]``."""
    out: dict[str, list[str]] = {}
    cand = candidate.astype(np.float64)
    for start in range(0, len(users), SCORE_BLOCK):
        block = users[start:start + SCORE_BLOCK]
        scores = vectors[start:start + SCORE_BLOCK].astype(np.float64) @ cand.T
        for offset, user in enumerate(block):
            row = scores[offset]
            banned = exclude_rows.get(user)
            if banned is not None and len(banned):
                row = row.copy()
                row[banned] = -np.inf
            chosen = top_k(row, item_ids, k)
            out[user] = [item_ids[j] for j in chosen if np.isfinite(row[j])]
    return out


def quality(lists: Mapping[str, list[str]], relevant: Mapping[str, Collection[str]], k: int) -> dict[str, float]:
    """``ndcg``, ``hr``, ``precision``, ``recall``, ``map`` and ``mrr`` at ``k`` plus ``users`` (a user without a list scores 0)."""
    return M.ranking_metrics(lists, relevant, k)
