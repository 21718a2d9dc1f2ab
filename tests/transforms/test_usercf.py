"""UserKNN: cosine user-user similarity and neighbour scores checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from transforms.usercf import UserKNN, encode_ids

# The board (summed weights; u1's i2 arrives as two rows of 1 and must be summed to 2):
#
#         i1  i2  i3  i4  i5     |R_u|
#   u1     1   2   .   .   .     sqrt(1 + 4)     = sqrt(5)
#   u2     1   1   3   .   .     sqrt(1 + 1 + 9) = sqrt(11)
#   u3     .   1   .   2   1     sqrt(1 + 4 + 1) = sqrt(6)
#   u4     .   .   .   .   4     4
#
# Cosines:
#   sim(u1, u2) = (1*1 + 2*1) / sqrt(5 * 11) = 3 / sqrt(55) = 0.404520
#   sim(u1, u3) = (2*1) / sqrt(5 * 6)        = 2 / sqrt(30) = 0.365148
#   sim(u2, u3) = (1*1) / sqrt(11 * 6)       = 1 / sqrt(66) = 0.123091
#   sim(u3, u4) = (1*4) / (sqrt(6) * 4)      = 1 / sqrt(6)  = 0.408248
#   sim(u1, u4) = sim(u2, u4) = 0
S12, S13, S23, S34 = 0.404520, 0.365148, 0.123091, 0.408248
USERS = ["u1", "u1", "u1", "u2", "u2", "u2", "u3", "u3", "u3", "u4"]
ITEMS = ["i1", "i2", "i2", "i1", "i2", "i3", "i2", "i4", "i5", "i5"]
WEIGHTS = [1.0, 1.0, 1.0, 1.0, 1.0, 3.0, 1.0, 2.0, 1.0, 4.0]


def fitted() -> UserKNN:
    return UserKNN.fit(np.array(USERS, dtype=object), np.array(ITEMS, dtype=object), np.array(WEIGHTS))


def approx_list(pairs):
    return [(name, pytest.approx(value, abs=1e-6)) for name, value in pairs]


def test_hand_numbers():
    assert 3 / math.sqrt(55) == pytest.approx(S12, abs=1e-6)
    assert 2 / math.sqrt(30) == pytest.approx(S13, abs=1e-6)
    assert 1 / math.sqrt(66) == pytest.approx(S23, abs=1e-6)
    assert 1 / math.sqrt(6) == pytest.approx(S34, abs=1e-6)


def test_fit_sums_duplicates_and_sorts_ids():
    model = fitted()
    assert list(model.user_ids) == ["u1", "u2", "u3", "u4"]
    assert list(model.item_ids) == ["i1", "i2", "i3", "i4", "i5"]
    np.testing.assert_array_equal(
        model.ratings.toarray(),
        [[1, 2, 0, 0, 0], [1, 1, 3, 0, 0], [0, 1, 0, 2, 1], [0, 0, 0, 0, 4]],
    )
    np.testing.assert_allclose(model.norms, [math.sqrt(5), math.sqrt(11), math.sqrt(6), 4])


def test_cosine_similarities():
    sims = fitted().similarities(["u1", "u2", "u3", "u4"]).toarray()
    np.testing.assert_allclose(
        sims,
        [[1, S12, S13, 0], [S12, 1, S23, 0], [S13, S23, 1, S34], [0, 0, S34, 1]],
        atol=1e-6,
    )
    with pytest.raises(KeyError, match="nobody"):
        fitted().similarities(["nobody"])


def test_recommend_scores_excluding_seen():
    # u1: neighbours u2 (0.404520), u3 (0.365148); unseen items:
    #   i3 = 0.404520 * 3 = 1.213560;  i4 = 0.365148 * 2 = 0.730297;  i5 = 0.365148 * 1
    # u2: neighbours u1, u3; unseen i4 = 0.123091 * 2 = 0.246183, i5 = 0.123091 (u1 adds nothing)
    # u3: neighbours u4 (0.408248), u1 (0.365148), u2 (0.123091); unseen:
    #   i1 = 0.365148 * 1 + 0.123091 * 1 = 0.488240;  i3 = 0.123091 * 3 = 0.369274
    # u4: neighbour u3 only; i4 = 0.408248 * 2 = 0.816497, i2 = 0.408248 * 1
    result = fitted().recommend(["u1", "u2", "u3", "u4", "stranger"], n=10)
    assert result == {
        "u1": approx_list([("i3", 1.213560), ("i4", 0.730297), ("i5", 0.365148)]),
        "u2": approx_list([("i4", 0.246183), ("i5", 0.123091)]),
        "u3": approx_list([("i1", 0.488240), ("i3", 0.369274)]),
        "u4": approx_list([("i4", 0.816497), ("i2", 0.408248)]),
        "stranger": [],
    }


def test_recommend_with_seen_items():
    # u1 without exclusion: i2 = 0.404520 * 1 + 0.365148 * 1 = 0.769668; i1 = 0.404520 * 1
    result = fitted().recommend(["u1"], n=10, exclude_seen=False)
    assert result == {"u1": approx_list(
        [("i3", 1.213560), ("i2", 0.769668), ("i4", 0.730297), ("i1", 0.404520), ("i5", 0.365148)])}


def test_k_neighbours_and_n_limit():
    model = fitted()
    # One neighbour: u1 -> u2 only (i3 = 3 * 0.404520); u3 -> u4 only, whose i5 u3 has seen.
    assert model.recommend(["u1", "u3"], n=10, k_neighbours=1) == {
        "u1": approx_list([("i3", 1.213560)]),
        "u3": [],
    }
    # Two neighbours: u3 -> u4, u1: i1 = 0.365148 (u2 dropped, so i3 is gone).
    assert model.recommend(["u3"], n=10, k_neighbours=2) == {"u3": approx_list([("i1", 0.365148)])}
    assert model.recommend(["u1"], n=2) == {"u1": approx_list([("i3", 1.213560), ("i4", 0.730297)])}
    assert model.recommend(["u1"], n=0) == {"u1": []}
    with pytest.raises(ValueError, match="n must be"):
        model.recommend(["u1"], n=-1)
    with pytest.raises(ValueError, match="k_neighbours must be"):
        model.recommend(["u1"], n=3, k_neighbours=-2)


def test_equal_scores_break_by_item_id():
    # v has {x, b, a} with weight 1, w has {x}: sim(w, v) = 1 / sqrt(3) and a and b both score
    # 1/sqrt(3) = 0.577350.  b arrives first, a must still come first.
    model = UserKNN.fit(
        np.array(["w", "v", "v", "v"], dtype=object),
        np.array(["x", "b", "x", "a"], dtype=object),
        np.ones(4),
    )
    assert model.recommend(["w"], n=5) == {"w": approx_list([("a", 0.577350), ("b", 0.577350)])}
    assert model.recommend(["w"], n=1) == {"w": approx_list([("a", 0.577350)])}


def test_equal_similarities_break_by_user_id():
    # w shares x with p and q equally (cos 1/sqrt(2) each); with one neighbour, p (first id)
    # is the one kept, so only p's other item shows up.
    model = UserKNN.fit(
        np.array(["w", "q", "q", "p", "p"], dtype=object),
        np.array(["x", "x", "from_q", "x", "from_p"], dtype=object),
        np.ones(5),
    )
    assert model.recommend(["w"], n=5, k_neighbours=1) == {"w": approx_list([("from_p", 0.707107)])}


def test_blocks_do_not_change_results():
    model = fitted()
    users = ["u4", "u1", "u3", "u2"]
    assert model.recommend(users, n=3, block_users=1) == model.recommend(users, n=3)
    with pytest.raises(ValueError, match="block_users"):
        model.recommend(users, n=3, block_users=0)


def test_negative_weights_and_cancelled_pairs():
    # u1 adds then removes i2 (1 + -1 = 0): the pair is dropped, so i2 is not "seen" and u1
    # shares nothing with u2 but i1: sim = 1 / (1 * sqrt(2)); i2 = 0.707107 * 1.
    model = UserKNN.fit(
        np.array(["u1", "u1", "u1", "u2", "u2"], dtype=object),
        np.array(["i1", "i2", "i2", "i1", "i2"], dtype=object),
        np.array([1.0, 1.0, -1.0, 1.0, 1.0]),
    )
    assert model.ratings.nnz == 3
    assert model.recommend(["u1"], n=3) == {"u1": approx_list([("i2", 0.707107)])}


def test_bad_input_is_rejected_with_a_reason():
    with pytest.raises(ValueError, match="same length"):
        UserKNN.fit(np.array(["u"], dtype=object), np.array(["a", "b"], dtype=object), np.ones(1))
    with pytest.raises(ValueError, match="finite"):
        UserKNN.fit(np.array(["u"], dtype=object), np.array(["a"], dtype=object), np.array([np.nan]))
    with pytest.raises(ValueError, match="position 1 is int"):
        UserKNN.fit(np.array(["u", 7], dtype=object), np.array(["a", "b"], dtype=object), np.ones(2))
    with pytest.raises(ValueError, match="1-D"):
        encode_ids(np.array([["a"]], dtype=object), "users")


def test_empty_model():
    model = UserKNN.fit(np.array([], dtype=object), np.array([], dtype=object), np.array([]))
    assert model.recommend(["u1"], n=5) == {"u1": []}
