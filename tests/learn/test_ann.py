"""ANN item neighbours: recall measured against exact search, self excluded, cosine without the bias entry."""

from __future__ import annotations

import numpy as np

from learn.ann import build_neighbours, recall_at_k, unit_rows


def test_recall_counts_the_share_of_exact_neighbours_found():
    exact = np.array([[0, 1, 2, 3], [1, 0, 2, 3]])
    exact_scores = np.array([[1.0, 0.9, 0.8, 0.7], [1.0, 0.9, 0.8, 0.7]])
    approx = np.array([[0, 1, 3, -1], [1, 2, 0, 3]])
    approx_scores = np.array([[1.0, 0.9, 0.7, -1.0], [1.0, 0.8, 0.9, 0.7]])
    # Query 0 (item 0): truth {1, 2}, found {1, 3} -> 1/2; query 1 (item 1): truth {0, 2}, found {2, 0} -> 1.
    assert recall_at_k(approx, approx_scores, exact, exact_scores, np.array([0, 1]), k=2) == 0.75


def test_recall_counts_ties_with_the_kth_exact_neighbour_as_found():
    # Items 2 and 3 are equally similar to item 0 (e.g. one shared vector): either completes the top 2.
    exact, exact_scores = np.array([[0, 1, 2, 3]]), np.array([[1.0, 0.9, 0.8, 0.8]])
    approx, approx_scores = np.array([[0, 1, 3, 2]]), np.array([[1.0, 0.9, 0.8, 0.8]])
    assert recall_at_k(approx, approx_scores, exact, exact_scores, np.array([0]), k=2) == 1.0
    worse = np.array([[1.0, 0.9, 0.79, 0.8]])  # a less similar item is not a tie
    assert recall_at_k(approx, worse, exact, exact_scores, np.array([0]), k=2) == 0.5


def test_neighbours_match_exact_search_and_recall_is_measured():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16))
    candidate = np.hstack([centres[rng.integers(0, 20, size=3000)] + 0.3 * rng.normal(size=(3000, 16)), rng.normal(size=(3000, 1)) * 50])
    ids = np.array([f"i{k}" for k in range(3000)], dtype=object)
    good = build_neighbours(candidate.astype(np.float32), ids, k=10, m=16, ef_construction=100, ef_search=100)
    assert good.info["recall_queries"] == 3000 and good.info["recall_at_k"] > 0.9
    # A starved search finds less, and the measured recall says so.
    poor = build_neighbours(candidate.astype(np.float32), ids, k=10, m=4, ef_construction=10, ef_search=1)
    assert poor.info["recall_at_k"] < good.info["recall_at_k"]
    unit = unit_rows(candidate)
    for item in ("i0", "i1234"):
        found, scores = good.neighbours[item]
        row = int(item[1:])
        exact = np.argsort(-(unit @ unit[row]))
        exact = [k for k in exact if k != row][:10]
        assert item not in found.tolist() and len(found) == 10
        assert len(set(found.tolist()) & {ids[k] for k in exact}) >= 8
        np.testing.assert_allclose(scores, unit[[int(f[1:]) for f in found]] @ unit[row], atol=1e-5)  # cosine, bias ignored
    # Without a bias entry (fold_in) the whole vector counts.
    whole = build_neighbours(candidate.astype(np.float32), ids, k=10, m=16, ef_construction=100, ef_search=100, has_bias=False)
    found, scores = whole.neighbours["i0"]
    full = unit_rows(candidate, has_bias=False)
    np.testing.assert_allclose(scores, full[[int(f[1:]) for f in found]] @ full[0], atol=1e-5)
    assert whole.info["metric"] == "cosine of candidate vectors"
