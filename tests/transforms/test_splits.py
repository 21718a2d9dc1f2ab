"""The splits against their definitions, and the stratified split against the reference algorithm."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from transforms.splits import per_user_holdout, stratified_random_split, temporal_cut_time, temporal_split


def _users(counts: dict[str, int], seed: int = 0) -> np.ndarray:
    rows = [user for user, count in counts.items() for _ in range(count)]
    np.random.default_rng(seed).shuffle(rows)  # interleave users like a real log
    return np.array(rows, dtype=object)


COUNTS = {"u1": 4, "u2": 8, "u3": 1, "u4": 10, "u5": 3, "u6": 20}


def test_each_user_keeps_floor_of_ratio_in_training():
    users = _users(COUNTS)
    split = stratified_random_split(users, ratio=0.75, seed=42)
    train = Counter(users[split.train].tolist())
    # floor(0.75 n): 4 -> 3, 8 -> 6, 1 -> 0, 10 -> 7, 3 -> 2, 20 -> 15.
    assert dict(train) == {"u1": 3, "u2": 6, "u4": 7, "u5": 2, "u6": 15}
    test = Counter(users[split.test].tolist())
    assert dict(test) == {"u1": 1, "u2": 2, "u3": 1, "u4": 3, "u5": 1, "u6": 5}


def test_parts_are_disjoint_and_cover_every_row():
    users = _users(COUNTS)
    split = stratified_random_split(users, ratio=0.6, seed=3)
    assert not set(split.train.tolist()) & set(split.test.tolist())
    assert sorted(split.train.tolist() + split.test.tolist()) == list(range(len(users)))
    assert list(split.train) == sorted(split.train)


def test_same_seed_same_split_other_seed_other_split():
    users = _users(COUNTS)
    first = stratified_random_split(users, seed=42)
    again = stratified_random_split(users, seed=42)
    other = stratified_random_split(users, seed=7)
    assert np.array_equal(first.train, again.train)
    assert not np.array_equal(first.train, other.train)


def _reference_split(users: np.ndarray, ratio: float, seed: int) -> set[int]:
    """The published algorithm written the pandas way: one uniform draw per row, rank within user."""
    frame = pd.DataFrame({"user": users, "row": np.arange(len(users))})
    np.random.seed(seed)
    frame["random"] = np.random.rand(len(frame))
    frame = frame.sort_values(["user", "random"])
    groups = frame.groupby("user")
    frame["rank"] = (groups.cumcount() + 1) / groups["user"].transform("count")
    return set(frame.loc[frame["rank"] <= ratio, "row"].tolist())


@pytest.mark.parametrize("seed", [42, 1, 2024])
def test_matches_the_reference_algorithm_row_for_row(seed):
    users = _users({f"u{i}": 3 + (i * 7) % 23 for i in range(40)}, seed=seed)
    split = stratified_random_split(users, ratio=0.75, seed=seed)
    assert set(split.train.tolist()) == _reference_split(users, 0.75, seed)


def test_min_rating_drops_small_users_from_both_parts():
    users = _users(COUNTS)
    split = stratified_random_split(users, ratio=0.75, seed=42, min_rating=4)
    kept = set(users[split.train].tolist()) | set(users[split.test].tolist())
    assert kept == {"u1", "u2", "u4", "u6"}
    assert len(split.train) + len(split.test) == 4 + 8 + 10 + 20


def test_stratify_by_item():
    items = _users({"a": 4, "b": 8})
    users = np.array([f"user{i}" for i in range(len(items))], dtype=object)
    split = stratified_random_split(users, items, ratio=0.5, seed=1, filter_by="item")
    assert Counter(items[split.train].tolist()) == {"a": 2, "b": 4}
    with pytest.raises(ValueError):
        stratified_random_split(users, None, filter_by="item")


@pytest.mark.parametrize("ratio", [0, 1, 1.5, -0.2])
def test_ratio_must_be_strictly_between_zero_and_one(ratio):
    with pytest.raises(ValueError):
        stratified_random_split(np.array(["a"], dtype=object), ratio=ratio)
    with pytest.raises(ValueError):
        temporal_split(np.array([1, 2]), ratio=ratio)


def test_temporal_split_cuts_at_the_ratio_quantile():
    ts = np.array([5, 1, 3, 3, 9, 7, 2, 8, 4, 6])
    # sorted: 1 2 3 3 4 5 6 7 8 9; position floor(0.8 * 10) = 8 holds 8, so t_cut = 8.
    assert temporal_cut_time(ts, 0.8) == 8
    split = temporal_split(ts, ratio=0.8)
    assert sorted(ts[split.train].tolist()) == [1, 2, 3, 3, 4, 5, 6, 7]
    assert sorted(ts[split.test].tolist()) == [8, 9]
    assert sorted(split.train.tolist() + split.test.tolist()) == list(range(10))


def test_temporal_split_keeps_ties_together_in_test():
    ts = np.array([1, 2, 2, 2, 3])
    # floor(0.5 * 5) = 2 -> t_cut = sorted[2] = 2: every event at 2 tests.
    split = temporal_split(ts, ratio=0.5)
    assert ts[split.train].tolist() == [1]
    assert ts[split.test].tolist() == [2, 2, 2, 3]
    assert ts[split.train].max() < ts[split.test].min()


def test_per_user_holdout_by_time_keeps_the_latest_rows_out():
    users = np.array(["a", "b", "a", "a", "b", "a", "a"], dtype=object)
    ts = np.array([50, 10, 10, 40, 20, 30, 20])
    split = per_user_holdout(users, ts, ratio=0.6, by="time")
    # a has 5 rows (ts 10 20 30 40 50): floor(0.6 * 5) = 3 train -> 10, 20, 30; b: floor(1.2) = 1 -> 10.
    assert sorted(zip(users[split.train].tolist(), ts[split.train].tolist())) == [("a", 10), ("a", 20), ("a", 30), ("b", 10)]
    assert sorted(zip(users[split.test].tolist(), ts[split.test].tolist())) == [("a", 40), ("a", 50), ("b", 20)]
