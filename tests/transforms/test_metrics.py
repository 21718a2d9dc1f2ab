"""Each metric against values worked out by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from transforms import metrics as M

# One list used throughout: hits at ranks 2 ("b") and 4 ("d"); "x" is relevant but not recommended.
LIST = ["a", "b", "c", "d", "e"]
RELEVANT = {"b", "d", "x"}


def test_precision_recall_f1_at_5():
    assert M.precision_at_k(LIST, RELEVANT, 5) == pytest.approx(2 / 5)
    assert M.recall_at_k(LIST, RELEVANT, 5) == pytest.approx(2 / 3)
    # F1 = 2 * 0.4 * (2/3) / (0.4 + 2/3) = 0.5333.. / 1.0666.. = 0.5
    assert M.f1_at_k(LIST, RELEVANT, 5) == pytest.approx(0.5)


def test_cutoff_drops_later_hits():
    # Top 3 = a, b, c: one hit at rank 2.
    assert M.precision_at_k(LIST, RELEVANT, 3) == pytest.approx(1 / 3)
    assert M.recall_at_k(LIST, RELEVANT, 3) == pytest.approx(1 / 3)
    # Top 1 = a: nothing.
    for metric in (M.precision_at_k, M.recall_at_k, M.f1_at_k, M.ndcg_at_k, M.average_precision, M.hit_at_k, M.reciprocal_rank):
        assert metric(LIST, RELEVANT, 1) == 0.0


def test_ndcg_uses_natural_log_discount_and_min_of_relevant_and_k():
    # DCG  = 1/ln(3) + 1/ln(5)             = 0.910239 + 0.621335            = 1.531574
    # IDCG = 1/ln(2) + 1/ln(3) + 1/ln(4)   = 1.442695 + 0.910239 + 0.721348 = 3.074282
    assert M.ndcg_at_k(LIST, RELEVANT, 5) == pytest.approx(1.531574 / 3.074282, abs=1e-6)
    assert M.ndcg_at_k(LIST, RELEVANT, 5) == pytest.approx(0.498189, abs=1e-6)
    # k = 3: DCG = 1/ln(3); IDCG still covers min(3, 3) = 3 positions.
    assert M.ndcg_at_k(LIST, RELEVANT, 3) == pytest.approx(0.910239 / 3.074282, abs=1e-6)
    # k = 2 with a hit at rank 2: IDCG covers min(3, 2) = 2 positions.
    assert M.ndcg_at_k(LIST, RELEVANT, 2) == pytest.approx(0.910239 / (1.442695 + 0.910239), abs=1e-6)
    # A perfect list scores 1.
    assert M.ndcg_at_k(["b", "d", "x"], RELEVANT, 3) == pytest.approx(1.0)


def test_average_precision_divides_by_all_relevant_items():
    # Hits: 1st at rank 2 (1/2), 2nd at rank 4 (2/4); sum 1.0 over |relevant| = 3.
    assert M.average_precision(LIST, RELEVANT, 5) == pytest.approx(1 / 3)
    # Ten hits in ten positions but twelve relevant items: 10/12, not 1 (MS Recommenders' `map`).
    relevant = {f"i{n}" for n in range(12)}
    recommended = [f"i{n}" for n in range(10)]
    assert M.average_precision(recommended, relevant, 10) == pytest.approx(10 / 12)


def test_hit_and_reciprocal_rank():
    assert M.hit_at_k(LIST, RELEVANT, 5) == 1.0
    assert M.reciprocal_rank(LIST, RELEVANT, 5) == pytest.approx(1 / 2)
    assert M.reciprocal_rank(["q", "r", "d"], RELEVANT, 5) == pytest.approx(1 / 3)


def test_short_list_is_still_divided_by_k():
    assert M.precision_at_k(["b"], {"b"}, 10) == pytest.approx(0.1)
    assert M.recall_at_k(["b"], {"b"}, 10) == 1.0
    assert M.ndcg_at_k(["b"], {"b"}, 10) == pytest.approx(1.0)


def test_repeated_item_counts_once():
    assert M.precision_at_k(["b", "b", "b"], {"b"}, 3) == pytest.approx(1 / 3)
    assert M.hit_ranks(["b", "b", "d"], {"b", "d"}, 3) == [1, 3]


def test_nothing_relevant_scores_zero_and_bad_k_is_rejected():
    assert M.recall_at_k(LIST, set(), 5) == 0.0
    assert M.ndcg_at_k(LIST, set(), 5) == 0.0
    assert M.average_precision(LIST, set(), 5) == 0.0
    with pytest.raises(ValueError):
        M.precision_at_k(LIST, RELEVANT, 0)
    with pytest.raises(ValueError):
        M.ndcg_at_k(LIST, RELEVANT, 2.5)


def test_ranking_metrics_counts_users_without_a_list_as_zero():
    recommendations = {"u1": LIST, "u3": ["z"]}
    relevant = {"u1": RELEVANT, "u2": {"a"}, "u3": set()}
    # u1 has the values above, u2 (no list) scores 0, u3 (nothing relevant) is not evaluated.
    result = M.ranking_metrics(recommendations, relevant, 5)
    assert result["users"] == 2
    assert result["precision"] == pytest.approx((2 / 5) / 2)
    assert result["recall"] == pytest.approx((2 / 3) / 2)
    assert result["f1"] == pytest.approx(0.5 / 2)
    assert result["ndcg"] == pytest.approx(0.498189 / 2, abs=1e-6)
    assert result["map"] == pytest.approx((1 / 3) / 2)
    assert result["hr"] == pytest.approx(1 / 2)
    assert result["mrr"] == pytest.approx((1 / 2) / 2)


def test_intra_list_diversity_is_share_of_pairs_across_categories():
    categories = {"a": "X", "b": "X", "c": "Y", "d": "Z"}
    # Pairs ab (same), ac, bc (different): 2 of 3.
    assert M.intra_list_diversity(["a", "b", "c"], categories, 3) == pytest.approx(2 / 3)
    # a, c, d all differ: 3 of 3; a, b: 0 of 1.
    assert M.intra_list_diversity(["a", "c", "d"], categories, 10) == 1.0
    assert M.intra_list_diversity(["a", "b"], categories, 10) == 0.0
    # Items without a category are skipped; fewer than two left -> undefined.
    assert M.intra_list_diversity(["a", "unknown"], categories, 10) is None
    assert M.intra_list_diversity(["a", "b", "c", "d"], categories, 2) == 0.0


def test_novelty_is_mean_self_information_in_bits():
    popularity = {"a": 50, "b": 25, "c": 1}
    # a: -log2(50/100) = 1 bit; b: -log2(25/100) = 2 bits.
    assert M.novelty(["a", "b"], popularity, 100, 10) == pytest.approx(1.5)
    # Never-seen items count as seen by one user: log2(100) = 6.643856 bits.
    assert M.self_information("new", popularity, 100) == pytest.approx(6.643856, abs=1e-6)
    assert M.self_information("c", popularity, 100) == pytest.approx(math.log2(100))
    assert M.novelty([], popularity, 100, 10) is None


def test_catalog_coverage():
    lists = [["a", "b"], ["b", "c"]]
    assert M.catalog_coverage(lists, {"a", "b", "c", "d"}, 2) == pytest.approx(3 / 4)
    assert M.catalog_coverage(lists, {"a", "b", "c", "d"}, 1) == pytest.approx(2 / 4)
    # Items outside the catalog do not count.
    assert M.catalog_coverage([["zz"]], {"a"}, 1) == 0.0
    assert M.catalog_coverage(lists, set(), 2) == 0.0


def test_beyond_accuracy_metrics_aggregate():
    lists = {"u1": ["a", "b"], "u2": ["a", "c"]}
    result = M.beyond_accuracy_metrics(lists, 2, {"a", "b", "c", "d"}, {"a": "X", "b": "X", "c": "Y"}, {"a": 4, "b": 2, "c": 1}, 4)
    assert result["coverage"] == pytest.approx(3 / 4)
    # u1: a, b same category -> 0; u2: a, c differ -> 1.
    assert result["diversity"] == pytest.approx(0.5)
    # u1: (0 + 1) / 2 bits; u2: (0 + 2) / 2 bits -> mean 0.75.
    assert result["novelty"] == pytest.approx(0.75)


def test_percentiles_match_linear_interpolation():
    values = [4.0, 1.0, 3.0, 2.0]
    result = M.percentiles(values, (0, 50, 95, 100))
    assert result == {"p0": 1.0, "p50": 2.5, "p95": pytest.approx(3.85), "p100": 4.0}
    assert result["p95"] == pytest.approx(float(np.percentile(values, 95)))
    assert M.percentiles([], (50,)) == {"p50": None}


def test_per_user_values_average_to_the_ranking_metrics():
    from transforms.metrics import per_user_metrics

    lists = {"u1": ["a", "b", "c"], "u2": ["d"], "u3": []}
    relevant = {"u1": {"b"}, "u2": {"x", "d"}, "u3": {"a"}, "u4": set()}
    per_user = per_user_metrics(lists, relevant, 2)
    means = M.ranking_metrics(lists, relevant, 2)
    assert len(per_user["hr"]) == 3 and per_user["hr"].tolist() == [1.0, 1.0, 0.0]
    for name, values in per_user.items():
        assert means[name] == pytest.approx(values.mean())


def test_bootstrap_intervals_hold_the_mean_are_seeded_and_narrow_with_more_data():
    import numpy as np

    from transforms.metrics import bootstrap_intervals

    rng = np.random.default_rng(3)
    small = rng.random((50, 2))
    low, high = bootstrap_intervals(small)
    assert (low < small.mean(axis=0)).all() and (small.mean(axis=0) < high).all()
    again = bootstrap_intervals(small)
    assert (again[0] == low).all() and (again[1] == high).all()
    large = rng.random((5000, 2))
    low_l, high_l = bootstrap_intervals(large)
    assert ((high_l - low_l) < (high - low) / 3).all()
    # Constant values: a zero-width interval; no rows: NaN; a bad level is refused.
    assert bootstrap_intervals(np.ones(10)) == (pytest.approx([1.0]), pytest.approx([1.0]))
    assert np.isnan(bootstrap_intervals(np.empty((0, 1)))[0]).all()
    with pytest.raises(ValueError, match="level"):
        bootstrap_intervals(small, level=1.5)
