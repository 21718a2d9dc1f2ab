"""Train/test splits of interaction logs, as row indices.

* :func:`stratified_random_split` is the per-user random split of Microsoft
  Recommenders' ``python_stratified_split`` (the MovieLens-100K protocol):
  every row draws one uniform number from a generator seeded with ``seed``
  (in row order, legacy ``numpy.random.seed`` stream); within each user the
  rows are ordered by that number and a row goes to training when
  ``position / count <= ratio`` (position 1-based).  So each user keeps
  ``floor(ratio * count)`` rows for training and the rest for testing, and the
  same rows in the same order give the same split as theirs.
* :func:`temporal_split` is a global time cut: everything before the cut time
  trains, everything at or after it tests.
* :func:`per_user_holdout` carves a validation part out of training rows
  (used by ``flowrec tune``, so the test set is never looked at).

Splits return index arrays so callers can take the same rows from every
column of an :class:`~transforms.events.EventBatch`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    """Row indices (ascending, int64) of the training and the test part."""

    train: np.ndarray
    test: np.ndarray


def _check_ratio(ratio: float) -> None:
    if not isinstance(ratio, (int, float)) or not 0.0 < float(ratio) < 1.0:
        raise ValueError(f"ratio must be strictly between 0 and 1, got {ratio!r}")


def _group_codes(keys: np.ndarray) -> np.ndarray:
    """Dense integer codes of ``keys`` (any hashable values, e.g. object str arrays)."""
    codes: dict[object, int] = {}
    return np.fromiter((codes.setdefault(key, len(codes)) for key in keys), dtype=np.int64, count=len(keys))


def _share_within_groups(sorted_groups: np.ndarray) -> np.ndarray:
    """``position / group size`` of each row, for group codes already sorted so groups are contiguous.

    Position is 1-based; the division is the same float64 division as the
    reference implementation's ``rank / count`` so ties at the ratio behave alike.
    """
    counts = np.bincount(sorted_groups)
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(sorted_groups)]))
    position = np.arange(len(sorted_groups)) - group_start + 1
    return position / counts[sorted_groups]


def stratified_random_split(
    users: np.ndarray,
    items: np.ndarray | None = None,
    ratio: float = 0.75,
    seed: int = 42,
    min_rating: int = 1,
    filter_by: str = "user",
) -> Split:
    """Per-group random split: each user (or item) keeps ``ratio`` of its rows for training.

    Algorithm (that of ``python_stratified_split``): rows of groups with fewer
    than ``min_rating`` rows are dropped (they are in neither part); every
    remaining row gets ``u ~ U[0, 1)`` from ``RandomState(seed).rand(n)`` in row
    order; within a group the rows are ranked by ``u`` and row ``i`` of rank
    ``r_i`` in a group of ``n_g`` rows trains iff ``r_i / n_g <= ratio``.

    ``filter_by`` is ``"user"`` (stratify by user, the default) or ``"item"``
    (then ``items`` is required).
    """
    _check_ratio(ratio)
    if filter_by not in ("user", "item"):
        raise ValueError("filter_by must be 'user' or 'item'")
    if not isinstance(min_rating, int) or min_rating < 1:
        raise ValueError("min_rating must be an integer >= 1")
    users = np.asarray(users, dtype=object)
    if filter_by == "item":
        if items is None:
            raise ValueError("filter_by='item' needs the items column")
        keys = np.asarray(items, dtype=object)
    else:
        keys = users
    if items is not None and len(items) != len(users):
        raise ValueError(f"users has {len(users)} rows but items has {len(items)}")
    rows = np.arange(len(keys), dtype=np.int64)
    groups = _group_codes(keys)
    if min_rating > 1 and len(rows):
        counts = np.bincount(groups)
        keep = counts[groups] >= min_rating
        rows, groups = rows[keep], groups[keep]
    if not len(rows):
        empty = np.empty(0, dtype=np.int64)
        return Split(empty, empty)
    draws = np.random.RandomState(seed).rand(len(rows))
    order = np.lexsort((draws, groups))  # by group, then by draw
    in_train = np.zeros(len(rows), dtype=bool)
    in_train[order] = _share_within_groups(groups[order]) <= ratio
    return Split(train=np.sort(rows[in_train]), test=np.sort(rows[~in_train]))


def temporal_split(ts: np.ndarray, ratio: float = 0.8) -> Split:
    """Global time cut: the earliest ``ratio`` of the rows (by time) train, the rest test.

    The cut time is ``t_cut = sorted(ts)[floor(ratio * n)]``; rows with
    ``ts < t_cut`` train and rows with ``ts >= t_cut`` test, so events sharing
    the cut timestamp all land in the test part and no test event precedes a
    training event.  Units of ``ts`` do not matter.
    """
    _check_ratio(ratio)
    ts = np.asarray(ts)
    if not len(ts):
        empty = np.empty(0, dtype=np.int64)
        return Split(empty, empty)
    cut = np.sort(ts, kind="stable")[int(np.floor(ratio * len(ts)))]
    rows = np.arange(len(ts), dtype=np.int64)
    return Split(train=rows[ts < cut], test=rows[ts >= cut])


def temporal_cut_time(ts: np.ndarray, ratio: float) -> int:
    """The cut time :func:`temporal_split` uses (same units as ``ts``)."""
    _check_ratio(ratio)
    ts = np.asarray(ts)
    if not len(ts):
        raise ValueError("no timestamps to cut")
    return int(np.sort(ts, kind="stable")[int(np.floor(ratio * len(ts)))])


def per_user_holdout(users: np.ndarray, ts: np.ndarray | None = None, ratio: float = 0.9, seed: int = 42, by: str = "random") -> Split:
    """Hold out the last (``by="time"``) or a random (``by="random"``) ``1 - ratio`` of each user's rows.

    ``by="random"`` is :func:`stratified_random_split`; ``by="time"`` orders
    each user's rows by ``ts`` (ties by row order) and keeps the first
    ``floor(ratio * count)`` for training.  Meant for carving a validation set
    from training data.
    """
    if by == "random":
        return stratified_random_split(users, ratio=ratio, seed=seed)
    if by != "time":
        raise ValueError("by must be 'random' or 'time'")
    _check_ratio(ratio)
    if ts is None:
        raise ValueError("by='time' needs timestamps")
    users = np.asarray(users, dtype=object)
    ts = np.asarray(ts)
    if len(ts) != len(users):
        raise ValueError(f"users has {len(users)} rows but ts has {len(ts)}")
    if not len(users):
        empty = np.empty(0, dtype=np.int64)
        return Split(empty, empty)
    groups = _group_codes(users)
    rows = np.arange(len(users), dtype=np.int64)
    order = np.lexsort((rows, ts, groups))
    in_train = np.zeros(len(rows), dtype=bool)
    in_train[order] = _share_within_groups(groups[order]) <= ratio
    return Split(train=rows[in_train], test=rows[~in_train])
