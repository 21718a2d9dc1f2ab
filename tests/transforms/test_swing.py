"""Swing similarity checked against hand-computed values and a plain-loop oracle."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import transforms.swing as swing_module
from transforms.swing import swing_similarity

# The board:
#   u1: {A, B, C}      |I_u1| = 3
#   u2: {A, B}         |I_u2| = 2
#   u3: {B, C, D}      |I_u3| = 3
#   u4: {A, B, C, D}   |I_u4| = 4
# Users per item: U_A = {1, 2, 4}, U_B = {1, 2, 3, 4}, U_C = {1, 3, 4}, U_D = {3, 4}.
# Pair intersections |I_u ∩ I_v|: (1,2) {A,B} 2; (1,3) {B,C} 2; (1,4) {A,B,C} 3;
#                                 (2,3) {B} 1;   (2,4) {A,B} 2;  (3,4) {B,C,D} 3.
# Unordered user pairs inside U_i ∩ U_j:
#   A,B: {1,2,4} -> (1,2), (1,4), (2,4)      A,C: {1,4} -> (1,4)     A,D: {4} -> none
#   B,C: {1,3,4} -> (1,3), (1,4), (3,4)      B,D: {3,4} -> (3,4)     C,D: {3,4} -> (3,4)
USERS = ["u1"] * 3 + ["u2"] * 2 + ["u3"] * 3 + ["u4"] * 4
ITEMS = ["A", "B", "C", "A", "B", "B", "C", "D", "A", "B", "C", "D"]


def board(extra_users=(), extra_items=()):
    return np.array(USERS + list(extra_users), dtype=object), np.array(ITEMS + list(extra_items), dtype=object)


def approx_list(pairs):
    return [(name, pytest.approx(value, abs=1e-6)) for name, value in pairs]


def test_plain_counting_with_alpha1_0_alpha2_0_beta_0():
    # All user weights are (|I_u| + 0)^0 = 1, so every pair adds 1 / |I_u ∩ I_v|:
    #   A,B = 1/2 + 1/3 + 1/2 = 4/3      A,C = 1/3
    #   B,C = 1/2 + 1/3 + 1/3 = 7/6      B,D = C,D = 1/3
    result = swing_similarity(*board(), alpha1=0.0, alpha2=0.0, beta=0.0)
    assert result == {
        "A": approx_list([("B", 4 / 3), ("C", 1 / 3)]),
        "B": approx_list([("A", 4 / 3), ("C", 7 / 6), ("D", 1 / 3)]),
        "C": approx_list([("B", 7 / 6), ("A", 1 / 3), ("D", 1 / 3)]),  # A, D tie: by id
        "D": approx_list([("B", 1 / 3), ("C", 1 / 3)]),  # B, C tie: by id
    }


def test_default_parameters_by_hand():
    # alpha1 = 5, alpha2 = 1, beta = 0.3: w(n) = (n + 5)^-0.3
    #   w2 = 7^-0.3 = 0.557790   w3 = 8^-0.3 = 0.535887   w4 = 9^-0.3 = 0.517282
    # Pair weights w_u w_v / (1 + |I_u ∩ I_v|):
    #   (1,2) = w3 w2 / 3 = 0.298917 / 3 = 0.099639
    #   (1,3) = w3 w3 / 3 = 0.287175 / 3 = 0.095725
    #   (1,4) = w3 w4 / 4 = 0.277205 / 4 = 0.069301
    #   (2,4) = w2 w4 / 3 = 0.288531 / 3 = 0.096177
    #   (3,4) = w3 w4 / 4                = 0.069301
    # A,B = 0.099639 + 0.069301 + 0.096177 = 0.265117
    # A,C = 0.069301
    # B,C = 0.095725 + 0.069301 + 0.069301 = 0.234327
    # B,D = C,D = 0.069301
    w2, w3, w4 = 7**-0.3, 8**-0.3, 9**-0.3
    assert w3 * w2 / 3 + w3 * w4 / 4 + w2 * w4 / 3 == pytest.approx(0.265117, abs=1e-6)
    assert w3 * w3 / 3 + 2 * w3 * w4 / 4 == pytest.approx(0.234327, abs=1e-6)
    result = swing_similarity(*board())
    assert result == {
        "A": approx_list([("B", 0.265117), ("C", 0.069301)]),
        "B": approx_list([("A", 0.265117), ("C", 0.234327), ("D", 0.069301)]),
        "C": approx_list([("B", 0.234327), ("A", 0.069301), ("D", 0.069301)]),
        "D": approx_list([("B", 0.069301), ("C", 0.069301)]),
    }


def test_symmetric_without_sampling_and_zero_below_two_common_users():
    users, items = board()
    rng = np.random.default_rng(7)
    extra_u = [f"x{n}" for n in rng.integers(0, 12, 60)]
    extra_i = [f"I{n}" for n in rng.integers(0, 15, 60)]
    result = swing_similarity(np.concatenate([users, extra_u]), np.concatenate([items, extra_i]))
    scores = {(i, j): s for i, row in result.items() for j, s in row}
    for (i, j), s in scores.items():
        assert scores[(j, i)] == pytest.approx(s, rel=1e-12)
    # A and D share only u4: no pair, so no score either way.
    assert ("A", "D") not in scores and ("D", "A") not in scores


def test_top_k_and_repeated_interactions():
    users, items = board(extra_users=["u1", "u4"], extra_items=["A", "D"])  # repeats count once
    result = swing_similarity(users, items, alpha1=0.0, alpha2=0.0, beta=0.0, top_k=1)
    assert result == {
        "A": approx_list([("B", 4 / 3)]),
        "B": approx_list([("A", 4 / 3)]),
        "C": approx_list([("B", 7 / 6)]),
        "D": approx_list([("B", 1 / 3)]),
    }
    assert swing_similarity(users, items, top_k=0) == {"A": [], "B": [], "C": [], "D": []}


def test_user_behaviour_filters():
    # min_user_behavior = 3 drops u2 (2 items): A,B keeps only (1,4): 1/3; A,C = 1/3;
    # B,C unchanged 7/6; B,D = C,D = 1/3.
    result = swing_similarity(*board(), alpha1=0.0, alpha2=0.0, beta=0.0, min_user_behavior=3)
    assert result["A"] == approx_list([("B", 1 / 3), ("C", 1 / 3)])
    assert result["B"] == approx_list([("C", 7 / 6), ("A", 1 / 3), ("D", 1 / 3)])
    # max_user_behavior = 3 drops u4 (4 items): only (1,2) for A,B = 1/2 and (1,3) for B,C = 1/2.
    result = swing_similarity(*board(), alpha1=0.0, alpha2=0.0, beta=0.0, max_user_behavior=3)
    assert result == {
        "A": approx_list([("B", 1 / 2)]),
        "B": approx_list([("A", 1 / 2), ("C", 1 / 2)]),
        "C": approx_list([("B", 1 / 2)]),
        "D": [],  # its users u3 and u4: u4 dropped, one user left
    }


def test_sampling_caps_users_per_main_item():
    # With at most 2 users per main item, A's list comes from one pair of {u1, u2, u4}; with
    # unit weights and alpha2 = 0 the possible A,B scores are 1/2 (1,2), 1/3 (1,4), 1/2 (2,4).
    kwargs = dict(alpha1=0.0, alpha2=0.0, beta=0.0, max_users_per_item=2, seed=3)
    result = swing_similarity(*board(), **kwargs)
    assert result == swing_similarity(*board(), **kwargs)  # seeded: reproducible
    a_scores = dict(result["A"])
    assert a_scores["B"] in (pytest.approx(1 / 2), pytest.approx(1 / 3))
    # D has exactly 2 users: never sampled, always (3,4): D,B = D,C = 1/3.
    assert result["D"] == approx_list([("B", 1 / 3), ("C", 1 / 3)])
    # A cap at the largest item size changes nothing.
    assert swing_similarity(*board(), max_users_per_item=4) == swing_similarity(*board())


def oracle(users, items, alpha1, alpha2, beta, min_behavior, max_behavior):
    """Swing straight from the formula, one unordered user pair at a time."""
    bought: dict[str, set[str]] = {}
    for u, i in zip(users, items):
        bought.setdefault(u, set()).add(i)
    bought = {u: s for u, s in bought.items() if min_behavior <= len(s) <= max_behavior}
    out: dict[tuple[str, str], float] = {}
    for u, v in itertools.combinations(sorted(bought), 2):
        common = bought[u] & bought[v]
        weight = (len(bought[u]) + alpha1) ** -beta * (len(bought[v]) + alpha1) ** -beta / (alpha2 + len(common))
        for i, j in itertools.permutations(sorted(common), 2):
            out[(i, j)] = out.get((i, j), 0.0) + weight
    return out


@pytest.mark.parametrize("chunk_cells", [swing_module.CHUNK_CELLS, 3])
def test_matches_the_plain_loop_oracle_on_a_random_board(monkeypatch, chunk_cells):
    monkeypatch.setattr(swing_module, "CHUNK_CELLS", chunk_cells)  # 3 forces one-column chunks
    rng = np.random.default_rng(11)
    users = np.array([f"u{n}" for n in rng.integers(0, 25, 300)], dtype=object)
    items = np.array([f"i{n}" for n in rng.integers(0, 30, 300)], dtype=object)
    params = dict(alpha1=2.0, alpha2=0.5, beta=0.4)
    expected = oracle(users, items, **params, min_behavior=3, max_behavior=16)
    result = swing_similarity(users, items, **params, min_user_behavior=3, max_user_behavior=16)
    got = {(i, j): s for i, row in result.items() for j, s in row}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12)


def test_bad_input_is_rejected_with_a_reason():
    users, items = board()
    with pytest.raises(ValueError, match="same length"):
        swing_similarity(users, items[:-1])
    with pytest.raises(ValueError, match="max_user_behavior"):
        swing_similarity(users, items, min_user_behavior=5, max_user_behavior=4)
    with pytest.raises(ValueError, match="max_users_per_item"):
        swing_similarity(users, items, max_users_per_item=0)
    with pytest.raises(ValueError, match="beta must be finite"):
        swing_similarity(users, items, beta=float("nan"))
    with pytest.raises(ValueError, match="alpha1 and alpha2"):
        swing_similarity(users, items, alpha2=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        swing_similarity(users, items, top_k=-1)
    with pytest.raises(ValueError, match="must hold strings"):
        swing_similarity(np.array([1, 2], dtype=object), np.array(["a", "b"], dtype=object))


def test_empty_input():
    assert swing_similarity(np.array([], dtype=object), np.array([], dtype=object)) == {}
