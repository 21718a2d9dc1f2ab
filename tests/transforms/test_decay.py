"""Forward decay: hand-computed values and equality with the naive definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.decay import (
    RENORMALISE_AFTER_HALF_LIVES,
    aggregate_by_group,
    decay_to,
    forward_factor,
    initial_landmark,
    naive_decayed_sum,
    renormalise,
)

T = 1_000  # half-life, ms


def test_hand_values():
    t = 5 * T + 300
    landmark = initial_landmark(t, T)
    assert landmark == 5 * T  # the half-life grid point at or before t
    stored = 4.0 * forward_factor(t, landmark, T)  # 4 * 2^0.3
    # weight 4 two half-lives later: 4 / 4 = 1
    assert decay_to(stored, landmark, t + 2 * T, T) == pytest.approx(1.0, rel=1e-12)
    assert decay_to(stored, landmark, t, T) == pytest.approx(4.0, rel=1e-12)
    assert forward_factor(landmark + T, landmark, T) == 2.0
    assert forward_factor(landmark + T // 2, landmark, T) == pytest.approx(math.sqrt(2), rel=1e-15)
    # Array forms agree with the scalar forms.
    ts = np.array([landmark, landmark + T, landmark + 3 * T])
    assert forward_factor(ts, landmark, T).tolist() == [1.0, 2.0, 8.0]
    assert decay_to(np.array([8.0, 2.0]), landmark, landmark + 3 * T, T).tolist() == [1.0, 0.25]
    assert naive_decayed_sum(np.array([4.0, 2.0]), np.array([0, T]), 2 * T, T) == pytest.approx(4 / 4 + 2 / 2)


def test_initial_landmark_grid():
    assert initial_landmark(0, T) == 0
    assert initial_landmark(999, T) == 0
    assert initial_landmark(1000, T) == 1000
    assert initial_landmark(1_700_000_000_123, 7 * 24 * 3600 * 1000) % (7 * 24 * 3600 * 1000) == 0


def test_renormalise_threshold_and_exact_scale():
    limit = RENORMALISE_AFTER_HALF_LIVES * T
    assert renormalise(0, limit, T) == (0, 1.0)  # exactly 64 half-lives: not yet
    landmark, scale = renormalise(0, limit + 1, T)
    assert landmark == 64 * T and scale == 2.0**-64  # m = floor((64T + 1) / T) = 64
    landmark, scale = renormalise(3 * T, 3 * T + 100 * T + 999, T)
    assert landmark == 103 * T and scale == math.ldexp(1.0, -100)
    assert landmark % T == 0  # landmarks stay on the grid
    # Scaling by 2^-m is exact: scaled-then-unscaled is the same float.
    value = 0.1234567891234
    assert value * scale * 2.0**100 == value


def test_aggregate_by_group():
    values = np.array([1.0, 2.0, 4.0, 8.0])
    groups = np.array(["books", "", "books", "toys"], dtype=object)
    assert aggregate_by_group(values, groups) == {"books": 5.0, "toys": 8.0}  # "" skipped


def forward_decayed(weights: list[float], ts: list[int], now: int, half_life: int) -> float:
    """The decayed sum computed as transforms/profile.py does it, event by event."""
    landmark = initial_landmark(ts[0], half_life)
    stored = 0.0
    for w, t in zip(weights, ts):
        landmark_new, scale = renormalise(landmark, t, half_life)
        if scale != 1.0:
            stored *= scale
            landmark = landmark_new
        stored += w * forward_factor(t, landmark, half_life)
    return decay_to(stored, landmark, now, half_life)


@st.composite
def event_streams(draw):
    half_life = draw(st.integers(1, 10_000))
    n = draw(st.integers(1, 30))
    start = draw(st.integers(0, 10**13))
    # Gaps up to 200 half-lives, so sequences often span far more than 64 half-lives.
    gaps = draw(st.lists(st.integers(0, 200 * half_life), min_size=n - 1, max_size=n - 1))
    ts = list(np.cumsum([start] + gaps).tolist())
    weights = draw(st.lists(st.floats(0.01, 100.0), min_size=n, max_size=n))
    # "now" within a few half-lives after the last event keeps the naive sum well above underflow.
    now = ts[-1] + draw(st.integers(0, 5 * half_life))
    return half_life, ts, weights, now


@settings(max_examples=300, deadline=None, derandomize=True)
@given(event_streams())
def test_forward_decay_equals_naive_sum(stream):
    half_life, ts, weights, now = stream
    expected = naive_decayed_sum(np.array(weights), np.array(ts), now, half_life)
    assert forward_decayed(weights, ts, now, half_life) == pytest.approx(expected, rel=1e-9)


def test_long_sequence_spanning_many_half_lives():
    # 1000 events one half-life apart span 999 half-lives: 15 renormalisations.
    ts = [7 + k * T for k in range(1000)]
    weights = [1.0] * 1000
    now = ts[-1]
    # Geometric series: sum_{k=0}^{999} 2^-k = 2 - 2^-999
    assert forward_decayed(weights, ts, now, T) == pytest.approx(2.0 - 2.0**-999, rel=1e-12)
    assert naive_decayed_sum(np.array(weights), np.array(ts), now, T) == pytest.approx(2.0, rel=1e-12)


def test_mixed_sign_weights():
    # +4 at 0, -2 at T, +1 at 2T; now = 3T: 4/8 - 2/4 + 1/2 = 0.5
    assert forward_decayed([4.0, -2.0, 1.0], [0, T, 2 * T], 3 * T, T) == pytest.approx(0.5, rel=1e-12)
