"""Every item-item similarity measure on one small board with known answers, plus shared properties.

The board (4 users x 4 items, binary):

    u1: {A, B}        |I_u1| = 2
    u2: {A, B, C}     |I_u2| = 3
    u3: {B, C}        |I_u3| = 2
    u4: {D}           |I_u4| = 1

Counts: n_A = 2, n_B = 3, n_C = 2, n_D = 1; c_AB = 2 (u1, u2), c_AC = 1 (u2), c_BC = 2 (u2, u3),
every pair with D is 0.

    cosine       c / sqrt(n_a n_b):   AB = 2/sqrt(6) = 0.816497   AC = 1/sqrt(4) = 0.5     BC = 2/sqrt(6)
    jaccard      c / (n_a + n_b - c): AB = 2/3                    AC = 1/3                 BC = 2/3
    lift         c / (n_a n_b):       AB = 1/3                    AC = 1/4                 BC = 1/3
    conditional  (c / n_a) / n_b^0.5 (directed):
                 A->B = 1/sqrt(3) = 0.577350   B->A = (2/3)/sqrt(2) = 0.471405
                 A->C = (1/2)/sqrt(2) = 0.353553   C->A = 0.353553
                 B->C = (2/3)/sqrt(2) = 0.471405   C->B = 1/sqrt(3)
    swing        (alpha1 5, alpha2 1, beta 0.3; w(n) = (n + 5)^-0.3, w(2) = 0.557790, w(3) = 0.535887)
                 AB: users {u1, u2}, one pair, |I_u1 ∩ I_u2| = |{A, B}| = 2: w(2) w(3) / (1 + 2) = 0.099639
                 BC: users {u2, u3}, one pair, |I_u2 ∩ I_u3| = |{B, C}| = 2: w(3) w(2) / 3    = 0.099639
                 AC: only u2 has both: no user pair -> 0

B's two neighbours tie under every measure (A and C), so B's list shows the id tie-break.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.config import ModelConfig
from transforms.similarity import COUNT_MEASURES, neighbours_from_row, pair_similarity, top_k
from transforms.swing import swing_similarity

BOARD = {"u1": "AB", "u2": "ABC", "u3": "BC", "u4": "D"}
ITEMS = "ABCD"
MEASURES = COUNT_MEASURES + ("swing",)
SWING_AB = (7**-0.3) * (8**-0.3) / 3

EXPECTED = {
    "cosine": {("A", "B"): 2 / math.sqrt(6), ("A", "C"): 0.5, ("B", "C"): 2 / math.sqrt(6)},
    "jaccard": {("A", "B"): 2 / 3, ("A", "C"): 1 / 3, ("B", "C"): 2 / 3},
    "lift": {("A", "B"): 1 / 3, ("A", "C"): 1 / 4, ("B", "C"): 1 / 3},
    "conditional": {
        ("A", "B"): 1 / math.sqrt(3), ("B", "A"): (2 / 3) / math.sqrt(2),
        ("A", "C"): 0.5 / math.sqrt(2), ("C", "A"): 0.5 / math.sqrt(2),
        ("B", "C"): (2 / 3) / math.sqrt(2), ("C", "B"): 1 / math.sqrt(3),
    },
    "swing": {("A", "B"): SWING_AB, ("B", "C"): SWING_AB},
}
EXPECTED_NEIGHBOURS = {
    "cosine": {"A": ["B", "C"], "B": ["A", "C"], "C": ["B", "A"], "D": []},
    "jaccard": {"A": ["B", "C"], "B": ["A", "C"], "C": ["B", "A"], "D": []},
    "lift": {"A": ["B", "C"], "B": ["A", "C"], "C": ["B", "A"], "D": []},
    "conditional": {"A": ["B", "C"], "B": ["A", "C"], "C": ["B", "A"], "D": []},
    "swing": {"A": ["B"], "B": ["A", "C"], "C": ["B"], "D": []},
}


def expected(measure: str, a: str, b: str) -> float:
    table = EXPECTED[measure]
    if (a, b) in table:
        return table[(a, b)]
    if measure != "conditional" and (b, a) in table:
        return table[(b, a)]
    return 0.0


# -- the adapter: one interface over count measures and swing --------------------


def counts():
    n = {i: sum(i in held for held in BOARD.values()) for i in ITEMS}
    c = {(a, b): sum(a in held and b in held for held in BOARD.values()) for a in ITEMS for b in ITEMS if a != b}
    return n, c


def similarity_table(measure: str, alpha: float = 0.5) -> dict[tuple[str, str], float]:
    """sim(a, b) for every ordered pair a != b of the board."""
    if measure == "swing":
        users = [u for u, held in BOARD.items() for _ in held]
        items = [i for held in BOARD.values() for i in held]
        result = swing_similarity(np.array(users, dtype=object), np.array(items, dtype=object), alpha1=5.0, alpha2=1.0, beta=0.3)
        found = {(a, b): s for a, lst in result.items() for b, s in lst}
        return {(a, b): found.get((a, b), 0.0) for a in ITEMS for b in ITEMS if a != b}
    n, c = counts()
    return {
        (a, b): float(pair_similarity(measure, np.array([c[(a, b)]]), n[a], np.array([n[b]]), alpha)[0])
        for a in ITEMS
        for b in ITEMS
        if a != b
    }


def neighbour_lists(measure: str, k: int) -> dict[str, list[str]]:
    if measure == "swing":
        users = [u for u, held in BOARD.items() for _ in held]
        items = [i for held in BOARD.values() for i in held]
        result = swing_similarity(np.array(users, dtype=object), np.array(items, dtype=object), top_k=k)
        return {a: [b for b, _ in lst] for a, lst in result.items()}
    n, c = counts()
    config = ModelConfig(similarity=measure, neighbours=k, min_cooccurrence=1.0)
    out = {}
    for a in ITEMS:
        others = np.array([b for b in ITEMS if b != a], dtype=object)
        ids, _ = neighbours_from_row(
            a, others, np.array([c[(a, b)] for b in others], dtype=np.float64), float(n[a]), np.array([n[b] for b in others], dtype=np.float64), config
        )
        out[a] = ids.tolist()
    return out


# -- the shared suite ---------------------------------------------------------------


@pytest.mark.parametrize("measure", MEASURES)
def test_known_values(measure):
    table = similarity_table(measure)
    for (a, b), value in table.items():
        assert value == pytest.approx(expected(measure, a, b), rel=1e-9, abs=1e-15), (a, b)


@pytest.mark.parametrize("measure", MEASURES)
def test_zero_without_cooccurrence_and_non_negative(measure):
    _, c = counts()
    table = similarity_table(measure)
    assert all(value >= 0.0 for value in table.values())
    for pair, value in table.items():
        if c[pair] == 0:
            assert value == 0.0, pair


@pytest.mark.parametrize("measure", [m for m in MEASURES if m != "conditional"])
def test_symmetric(measure):
    table = similarity_table(measure)
    for (a, b), value in table.items():
        assert value == pytest.approx(table[(b, a)], rel=1e-12, abs=0.0)


def test_conditional_is_directed():
    table = similarity_table("conditional")
    assert table[("A", "B")] > table[("B", "A")]  # P(B|A) = 1, P(A|B) = 2/3
    # alpha = 0 is plain P(b|a): A->B = 1, B->A = 2/3
    plain = similarity_table("conditional", alpha=0.0)
    assert (plain[("A", "B")], plain[("B", "A")]) == pytest.approx((1.0, 2 / 3))


@pytest.mark.parametrize("measure", MEASURES)
def test_neighbour_order_with_id_tie_break(measure):
    assert neighbour_lists(measure, 20) == EXPECTED_NEIGHBOURS[measure]


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_k_bounds(measure, k):
    full = EXPECTED_NEIGHBOURS[measure]
    assert neighbour_lists(measure, k) == {item: lst[:k] for item, lst in full.items()}


def test_swing_k_zero():
    assert neighbour_lists("swing", 0) == {i: [] for i in ITEMS}


# -- count measures: edges -------------------------------------------------------------


def test_pair_similarity_zero_for_non_positive_counts():
    for measure in COUNT_MEASURES:
        sims = pair_similarity(measure, np.array([0.0, 1.0, 1.0, -1.0]), 2.0, np.array([2.0, 0.0, -3.0, 2.0]))
        assert sims.tolist() == [0.0, 0.0, 0.0, 0.0], measure
        assert pair_similarity(measure, np.array([1.0]), 0.0, np.array([2.0])).tolist() == [0.0]


def test_jaccard_denominator_floor():
    # Weighted pair counts can exceed the items' own counts: c = 5, n_a = n_b = 2 -> 5 / max(-1, 5) = 1.
    assert pair_similarity("jaccard", np.array([5.0]), 2.0, np.array([2.0])).tolist() == [1.0]


def test_unknown_measure():
    with pytest.raises(ValueError, match="not a count-based similarity"):
        pair_similarity("swing", np.array([1.0]), 1.0, np.array([1.0]))


def test_neighbours_from_row_skips_weak_pairs_and_the_item_itself():
    config = ModelConfig(similarity="lift", neighbours=5, min_cooccurrence=2.0)
    others = np.array(["x", "self", "y", "z"], dtype=object)
    c_ab = np.array([1.0, 9.0, 2.0, 3.0])  # x below min_cooccurrence
    n_b = np.array([1.0, 9.0, 4.0, 6.0])
    ids, sims = neighbours_from_row("self", others, c_ab, 1.0, n_b, config)
    # lift: y = 2 / 4 = 0.5, z = 3 / 6 = 0.5 (tie -> id)
    assert ids.tolist() == ["y", "z"] and sims.tolist() == [0.5, 0.5]


# -- top_k ---------------------------------------------------------------------------------


def test_top_k_by_hand():
    scores = np.array([3.0, 1.0, 2.0, 2.0, 2.0])
    ids = np.array(["e", "d", "c", "b", "a"], dtype=object)
    assert top_k(scores, ids, 2).tolist() == [0, 4]  # the tie at the cut goes to the smallest id "a"
    assert top_k(scores, ids, 4).tolist() == [0, 4, 3, 2]
    assert top_k(scores, ids, 99).tolist() == [0, 4, 3, 2, 1]
    assert top_k(scores, ids, 0).tolist() == [] and top_k(scores, ids, -1).tolist() == []
    assert top_k(np.array([]), np.array([], dtype=object), 3).tolist() == []


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.integers(0, 3), min_size=0, max_size=30), st.integers(0, 35), st.randoms(use_true_random=False))
def test_top_k_matches_a_full_sort(values, k, rng):
    ids = [f"id{i:02d}" for i in range(len(values))]
    rng.shuffle(ids)
    scores = np.array(values, dtype=np.float64)
    ids_arr = np.array(ids, dtype=object)
    reference = sorted(range(len(values)), key=lambda i: (-values[i], ids[i]))[:k]
    assert top_k(scores, ids_arr, k).tolist() == reference
