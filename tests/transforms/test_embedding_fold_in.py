"""The fold_in user vector at serving time: the weighted ridge minimiser, built from the export's rule."""

from __future__ import annotations

import numpy as np
import pytest

from state.embeddings import EmbeddingExport, UserVectorRule
from transforms.embedding import EmbeddingModel, fold_in


def _objective(u: np.ndarray, candidate: np.ndarray, interest_rows: list[int], weights: np.ndarray, confidence: float, regularization: float) -> float:
    """``sum_j w_j (u . c_j - p_j)^2 + l |u|^2`` written out item by item (the module doc's definition)."""
    total = regularization * float(u @ u)
    for j in range(len(candidate)):
        if j in interest_rows:
            w, p = 1.0 + confidence * weights[interest_rows.index(j)], 1.0
        else:
            w, p = 1.0, 0.0
        total += w * (float(candidate[j] @ u) - p) ** 2
    return total


def test_fold_in_minimises_the_weighted_ridge_objective():
    rng = np.random.default_rng(0)
    candidate = rng.normal(size=(30, 4))
    rows, weights = [2, 5, 11], np.array([0.5, 3.0, 1.0])
    u = fold_in(candidate.T @ candidate, candidate[rows], weights, confidence=0.8, regularization=2.0)
    best = _objective(u, candidate, rows, weights, 0.8, 2.0)
    for _ in range(20):  # any step away from the solution costs more
        assert _objective(u + rng.normal(scale=0.05, size=4), candidate, rows, weights, 0.8, 2.0) > best
    # Stronger interest in an item pulls its score up.
    heavier = fold_in(candidate.T @ candidate, candidate[rows], weights * np.array([1.0, 10.0, 1.0]), 0.8, 2.0)
    assert candidate[5] @ heavier > candidate[5] @ u


def test_model_serves_the_rule_of_its_export():
    rng = np.random.default_rng(1)
    ids = np.array([f"i{k}" for k in range(12)], dtype=object)
    candidate = rng.normal(size=(12, 5)).astype(np.float32)
    query = rng.normal(size=(12, 5)).astype(np.float32)
    rule = UserVectorRule("fold_in", confidence=0.5, regularization=3.0)
    folded = EmbeddingModel(EmbeddingExport("v1", ids, candidate, candidate, user_vector=rule))
    interests = [("i3", 2.0), ("nope", 5.0), ("i7", 0.5), ("i9", -1.0)]  # unknown and negative interests are skipped
    c = candidate.astype(np.float64)
    expected = fold_in(c.T @ c, c[[3, 7]], np.array([2.0, 0.5]), 0.5, 3.0)
    np.testing.assert_allclose(folded.user_vector(interests), expected, rtol=1e-10)
    assert folded.user_vector([("nope", 1.0)]) is None
    mean = EmbeddingModel(EmbeddingExport("v1", ids, query, candidate))
    np.testing.assert_allclose(mean.user_vector(interests), (2.0 * query[3] + 0.5 * query[7]) / 2.5, rtol=1e-6)
    assert mean.gram is None


def test_rule_is_checked():
    with pytest.raises(ValueError, match="unknown user vector rule"):
        UserVectorRule("median")
    with pytest.raises(ValueError, match="confidence > 0 and regularization > 0"):
        UserVectorRule("fold_in", confidence=1.0, regularization=0.0)
