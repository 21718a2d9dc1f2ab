"""Baselines on boards small enough to check by hand or against the formula computed another way."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.baselines import ALS, BPR, DAY_MS, EASE, SAR, Interactions, Popularity, top_n
from transforms.events import batch_from_columns

T0 = 1_600_000_000_000  # an event time in epoch ms


def board(rows: list[tuple[str, str, float, int]]) -> Interactions:
    user, item, weight, ts = zip(*rows)
    return Interactions(np.array(user, dtype=object), np.array(item, dtype=object), np.array(weight, dtype=float), np.array(ts, dtype=np.int64))


def test_popularity_orders_by_distinct_users_and_skips_seen():
    data = board(
        [
            ("u1", "a", 1, T0), ("u1", "a", 1, T0), ("u1", "b", 1, T0),  # u1 twice on a: still one user
            ("u2", "b", 1, T0), ("u3", "b", 1, T0), ("u3", "c", 1, T0),
            ("u4", "c", 1, T0), ("u4", "d", 1, T0),
        ]
    )
    model = Popularity().fit(data)
    # b: 3 users, c: 2, a: 1, d: 1 (a before d: ties by id).
    assert model.recommend(["new-user"], 4) == {"new-user": ["b", "c", "a", "d"]}
    assert model.recommend(["u3"], 4) == {"u3": ["a", "d"]}
    assert model.recommend(["u3"], 4, exclude_seen=False) == {"u3": ["b", "c", "a", "d"]}
    assert model.recommend(["u3"], 4, exclude={"u3": {"a"}}) == {"u3": ["d"]}


def test_top_n_breaks_ties_by_column_and_skips_excluded():
    scores = np.array([1.0, 3.0, 3.0, -np.inf, 2.0, 3.0])
    assert top_n(scores, 2).tolist() == [1, 2]
    assert top_n(scores, 10).tolist() == [1, 2, 5, 4, 0]


def test_sar_scores_by_hand():
    # u1: a (5, now), b (3, 30 days ago: half weight); u2: a (4), c (2).
    data = board([("u1", "a", 5, T0), ("u1", "b", 3, T0 - 30 * DAY_MS), ("u2", "a", 4, T0), ("u2", "c", 2, T0)])
    model = SAR(similarity="jaccard", half_life_days=30).fit(data)
    # Co-occurrence: C_aa = 2, C_bb = C_cc = 1, C_ab = C_ac = 1, C_bc = 0.
    # Jaccard: S_ab = 1 / (2 + 1 - 1) = 0.5, S_ac = 0.5, S_bc = 0, diagonal 1.
    # u1 affinity: a = 5, b = 3 * 2^-1 = 1.5 -> c = 5 * 0.5 + 1.5 * 0 = 2.5.
    scores = model.item_scores("u1")
    assert scores["c"] == pytest.approx(2.5)
    assert scores["a"] == pytest.approx(5 * 1 + 1.5 * 0.5)
    # u2 affinity: a = 4, c = 2 -> b = 4 * 0.5 + 2 * 0 = 2.
    assert model.item_scores("u2")["b"] == pytest.approx(2.0)
    assert model.recommend(["u1", "u2"], 5) == {"u1": ["c"], "u2": ["b"]}


def test_sar_lift_and_no_decay():
    data = board([("u1", "a", 1, T0), ("u1", "b", 1, T0 - 300 * DAY_MS), ("u2", "a", 1, T0), ("u2", "c", 1, T0)])
    model = SAR(similarity="lift", time_decay=False).fit(data)
    # Lift S_ab = C_ab / (C_aa C_bb) = 1 / 2; u1 affinity a = 1, b = 1 (no decay): score c = 1 * S_ac = 0.5.
    assert model.item_scores("u1")["c"] == pytest.approx(0.5)


def ridge_ease(x: np.ndarray, lam: float) -> np.ndarray:
    """EASE computed another way: column j is a ridge regression of x_j on the other columns."""
    n_items = x.shape[1]
    b = np.zeros((n_items, n_items))
    for j in range(n_items):
        others = [i for i in range(n_items) if i != j]
        xo = x[:, others]
        b[others, j] = np.linalg.solve(xo.T @ xo + lam * np.eye(len(others)), xo.T @ x[:, j])
    return b


X4 = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 1], [0, 0, 1, 1]], dtype=float)


def interactions_from_matrix(x: np.ndarray) -> Interactions:
    rows = [(f"u{u}", f"i{i}", 1.0, T0) for u, i in zip(*np.nonzero(x))]
    return board(rows)


@pytest.mark.parametrize("matrix", [X4, np.vstack([X4, X4[:2]]), X4[:3]], ids=["square", "more-users", "more-items"])
def test_ease_matches_the_ridge_regression_form(matrix):
    lam = 0.7
    model = EASE(regularization=lam).fit(interactions_from_matrix(matrix))
    assert model.dual == (matrix.shape[0] < matrix.shape[1])
    expected = ridge_ease(matrix, lam)
    assert np.allclose(model.item_weights(), expected, atol=1e-10)
    # Scores of user u0 are x_u0 B.
    scores = model.item_scores("u0")
    assert [scores[f"i{i}"] for i in range(matrix.shape[1])] == pytest.approx((matrix[0] @ expected).tolist())


def two_taste_board(hidden: dict[str, str]) -> Interactions:
    """Users 0-9 like items a0-a5, users 10-19 like b0-b5; ``hidden`` items are left out of each user's row."""
    rows = []
    for u in range(20):
        group = "a" if u < 10 else "b"
        for i in range(6):
            item = f"{group}{i}"
            if hidden.get(f"u{u}") != item:
                rows.append((f"u{u}", item, 1.0, T0 + u * 1000 + i))
    return board(rows)


# Settings for a 20 x 12 board (the defaults are tuned for ML-100K and regularise far too hard here).
SMALL_FACTOR_MODELS = {
    "als": lambda: ALS(factors=4, regularization=0.1, alpha=5.0, iterations=20, seed=7),
    "bpr": lambda: BPR(factors=4, learning_rate=0.05, regularization=0.001, iterations=300, seed=7),
}


@pytest.mark.parametrize("name", sorted(SMALL_FACTOR_MODELS))
def test_factor_models_recommend_within_the_users_taste_and_are_seeded(name):
    make = SMALL_FACTOR_MODELS[name]
    data = two_taste_board({"u0": "a3", "u15": "b1"})
    assert make().fit(data).recommend(["u0", "u15"], 1) == {"u0": ["a3"], "u15": ["b1"]}
    assert make().fit(data).item_scores("u0") == pytest.approx(make().fit(data).item_scores("u0"))


def test_interactions_from_events_weights_ratings_and_drops_forget():
    events = batch_from_columns(
        ["u1", "u1", "u2"], ["a", "", "b"], ["rating", "forget", "purchase"], [T0, T0 + 1, T0 + 2], rating=[4.0, np.nan, np.nan]
    )
    data = Interactions.from_events(events)
    assert data.item.tolist() == ["a", "b"]
    # rating weight 1.0 x rating 4; purchase weight 6.
    assert data.weight.tolist() == [4.0, 6.0]


def test_unfitted_and_empty_inputs_are_rejected():
    with pytest.raises(RuntimeError):
        Popularity().recommend(["u"], 3)
    with pytest.raises(ValueError):
        Popularity().fit(board([("u", "a", 1.0, T0)]).take(slice(0, 0)))
    with pytest.raises(ValueError):
        SAR().fit(board([("u", "a", -2.0, T0)]))
    with pytest.raises(ValueError):
        EASE(regularization=0)
