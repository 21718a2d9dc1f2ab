"""Time-decayed interest by forward decay.

The decayed value of a stream of weighted events at time ``now`` is

    V(now) = sum_k w_k * 2^(-(now - t_k) / T)

with half-life ``T`` (ms).  Forward decay (Cormode et al., 2009) stores
``S = sum_k w_k * 2^((t_k - L) / T)`` against a landmark ``L`` instead, so an
update is one addition and ``V(now) = S * 2^((L - now) / T)``.  ``2^((t - L)/T)``
grows without bound, so before it can overflow the landmark moves forward by a
whole number ``m`` of half-lives and ``S`` is scaled by ``2^-m`` — an exact
operation in binary floating point.  Landmarks are always multiples of ``T``, so
every engine that sees the same events computes the same landmarks.
"""

from __future__ import annotations

import math

import numpy as np

# Move the landmark once an event is this many half-lives past it; 2^64 leaves
# ample headroom below float64's 2^1023 for sums of many weighted events.
RENORMALISE_AFTER_HALF_LIVES = 64


def initial_landmark(ts_ms: int, half_life_ms: int) -> int:
    """The landmark for a key first seen at ``ts_ms``: the half-life grid point at or before it."""
    return (ts_ms // half_life_ms) * half_life_ms


def forward_factor(ts_ms: np.ndarray | int, landmark_ms: int, half_life_ms: int) -> np.ndarray | float:
    """``2^((t - L) / T)``: the multiplier that stores a weight observed at ``t``."""
    if isinstance(ts_ms, np.ndarray):
        return np.exp2((ts_ms - landmark_ms) / half_life_ms)
    return 2.0 ** ((ts_ms - landmark_ms) / half_life_ms)


def decay_to(stored: np.ndarray | float, landmark_ms: int, now_ms: int, half_life_ms: int) -> np.ndarray | float:
    """``S * 2^((L - now) / T)``: the decayed value at ``now`` of a forward-decayed sum."""
    return stored * 2.0 ** ((landmark_ms - now_ms) / half_life_ms)


def renormalise(landmark_ms: int, ts_ms: int, half_life_ms: int) -> tuple[int, float]:
    """The landmark to use for an event at ``ts_ms``, and the scale to apply to stored sums.

    Returns ``(landmark, 1.0)`` while the event is fewer than
    :data:`RENORMALISE_AFTER_HALF_LIVES` half-lives past the landmark; otherwise
    the landmark moves forward by ``m = floor((ts - L) / T)`` half-lives and the
    scale is ``2^-m`` (exact).
    """
    if ts_ms - landmark_ms <= RENORMALISE_AFTER_HALF_LIVES * half_life_ms:
        return landmark_ms, 1.0
    m = (ts_ms - landmark_ms) // half_life_ms
    return landmark_ms + m * half_life_ms, math.ldexp(1.0, -int(m))


def naive_decayed_sum(weights: np.ndarray, ts_ms: np.ndarray, now_ms: int, half_life_ms: int) -> float:
    """The definition, for tests: ``sum_k w_k * 2^(-(now - t_k) / T)``."""
    return float(np.sum(weights * np.exp2(-(now_ms - ts_ms) / half_life_ms)))


def aggregate_by_group(values: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Sum values per group label (e.g. item interests -> category or brand interests).

    Decay is linear, so the decayed interest in a category equals the sum of the
    decayed interests in its items; empty labels are skipped.
    """
    out: dict[str, float] = {}
    for value, group in zip(values.tolist(), groups.tolist()):
        if group:
            out[group] = out.get(group, 0.0) + value
    return out
