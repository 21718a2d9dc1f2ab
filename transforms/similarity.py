"""Item-item similarity from co-occurrence weights, and deterministic top-K selection.

Notation: ``c_ab`` is the co-occurrence weight of items a and b (see
:mod:`transforms.profile`), ``n_a`` the occurrence weight of a.  Measures:

* cosine:       ``c_ab / sqrt(n_a * n_b)``
* jaccard:      ``c_ab / (n_a + n_b - c_ab)`` (denominator floored at ``c_ab``, since
  weighted pair counts can exceed an item's own count)
* lift:         ``c_ab / (n_a * n_b)`` — lift up to the constant factor ``N``
  (total weight), which changes no ranking and cancels in the scorer's
  per-list normalisation
* conditional:  ``(c_ab / n_a) / n_b^alpha`` — P(b|a) damped by b's popularity
* swing:        user-pair based (Alibaba); see :mod:`transforms.swing`; needs
  the users' item sets, not counts, so it is a batch measure.

All count-based measures are 0 where ``c_ab`` is 0 and are symmetric except
``conditional``.
"""

from __future__ import annotations

import numpy as np

from transforms.config import ModelConfig

COUNT_MEASURES = ("cosine", "jaccard", "lift", "conditional")


def pair_similarity(measure: str, c_ab: np.ndarray, n_a: np.ndarray | float, n_b: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Similarity of a to each b from counts (vectorised over b); zero where any count is <= 0."""
    c_ab = np.asarray(c_ab, dtype=np.float64)
    n_a = np.asarray(n_a, dtype=np.float64)
    n_b = np.asarray(n_b, dtype=np.float64)
    valid = (c_ab > 0) & (n_a > 0) & (n_b > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if measure == "cosine":
            sim = c_ab / np.sqrt(n_a * n_b)
        elif measure == "jaccard":
            sim = c_ab / np.maximum(n_a + n_b - c_ab, c_ab)
        elif measure == "lift":
            sim = c_ab / (n_a * n_b)
        elif measure == "conditional":
            sim = (c_ab / n_a) / np.power(n_b, alpha)
        else:
            raise ValueError(f"{measure!r} is not a count-based similarity; use one of {COUNT_MEASURES}")
    return np.where(valid, sim, 0.0)


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores, best first; ties broken by id ascending.

    Uses ``argpartition`` to cut to the k-th value, then sorts only the cut
    (plus every entry tied with the k-th, so the tie-break is exact).
    """
    n = len(scores)
    if n == 0 or k <= 0:
        return np.empty(0, dtype=np.intp)
    if n > k:
        kth = np.partition(scores, n - k)[n - k]
        candidates = np.flatnonzero(scores >= kth)
    else:
        candidates = np.arange(n)
    order = np.lexsort((ids[candidates], -scores[candidates]))
    return candidates[order[:k]]


def neighbours_from_row(
    item: str,
    others: np.ndarray,
    c_ab: np.ndarray,
    n_a: float,
    n_b: np.ndarray,
    config: ModelConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-K neighbours of ``item`` from its co-occurrence row: (ids, similarities), best first.

    Pairs with weight below ``config.min_cooccurrence`` and the item itself are
    skipped; only positive similarities are kept.
    """
    keep = (c_ab >= config.min_cooccurrence) & (others != item)
    others, c_ab, n_b = others[keep], c_ab[keep], n_b[keep]
    sims = pair_similarity(config.similarity, c_ab, n_a, n_b, config.conditional_alpha)
    positive = sims > 0
    others, sims = others[positive], sims[positive]
    idx = top_k(sims, others, config.neighbours)
    return others[idx], sims[idx]
