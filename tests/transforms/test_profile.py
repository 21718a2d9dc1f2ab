"""User profile updates: co-occurrence pairs, interests, cart and purchases, forgetting, pruning."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from transforms.config import ModelConfig
from transforms.decay import naive_decayed_sum
from transforms.events import ADD_TO_CART, CLICK, FAVORITE, FORGET, PURCHASE, REMOVE_FROM_CART, VIEW
from transforms.profile import ItemContribution, UserProfile, apply_user_events, apply_window, group_by_user, scorable, top_interests, with_half_life

BIG_HALF_LIFE = 10**12  # decay is negligible over the few hundred ms of these sequences


def run(events, config, profile=None):
    """events: (item, code, ts, weight) tuples -> (profile, contribution)."""
    out = ItemContribution()
    items, codes, ts, weights = (list(c) for c in zip(*events)) if events else ([], [], [], [])
    return apply_user_events(profile, items, codes, ts, weights, config, out), out


def pairs(out: ItemContribution) -> list[tuple[str, str, float]]:
    return list(zip(out.pair_a, out.pair_b, out.pair_weights))


CONFIG = ModelConfig(half_life_ms=BIG_HALF_LIFE, history_length=3, session_gap_ms=100)

SEQUENCE = [
    ("A", VIEW, 0, 1.0),  # history [A]
    ("B", CLICK, 10, 2.0),  # pairs with A: min(2, 1) = 1                     history [A, B]
    ("C", ADD_TO_CART, 20, 4.0),  # A: min(4, 1) = 1; B: min(4, 2) = 2        history [A, B, C]
    ("A", VIEW, 30, 1.0),  # B: min(1, 2) = 1; C: min(1, 4) = 1; never A-A  history [B, C, A]
    ("C", REMOVE_FROM_CART, 40, -2.0),  # negative: no pairs, no history change
    ("D", PURCHASE, 50, 6.0),  # B: 2, C: 4 (its latest positive weight), A: 1; history -> [C, A, D]
    ("E", VIEW, 200, 1.0),  # C, A, D are 180, 170, 150 ms back: beyond the 100 ms gap -> no pairs
    ("F", VIEW, 260, 1.0),  # E is 60 ms back: min(1, 1) = 1; A, D too old  history [D, E, F]
    ("G", FAVORITE, 300, 3.0),  # E exactly 100 ms back (gap inclusive): 1; F: 1
]


def test_pairs_from_a_hand_written_sequence():
    profile, out = run(SEQUENCE, CONFIG)
    expected_one_way = [
        ("B", "A", 1.0),
        ("C", "A", 1.0), ("C", "B", 2.0),
        ("A", "B", 1.0), ("A", "C", 1.0),
        ("D", "B", 2.0), ("D", "C", 4.0), ("D", "A", 1.0),
        ("F", "E", 1.0),
        ("G", "E", 1.0), ("G", "F", 1.0),
    ]
    both_ways = []
    for a, b, w in expected_one_way:  # emitted in both directions, history oldest first
        both_ways += [(a, b, w), (b, a, w)]
    assert pairs(out) == both_ways
    assert all(a != b for a, b, _ in pairs(out))
    # Occurrence and trend weights: positive events only.
    assert out.items == ["A", "B", "C", "A", "D", "E", "F", "G"]
    assert out.item_weights == [1.0, 2.0, 4.0, 1.0, 6.0, 1.0, 1.0, 3.0]
    assert out.trend_items == out.items and out.trend_weights == out.item_weights
    assert out.trend_ts == [0, 10, 20, 30, 50, 200, 260, 300]
    # History: the last 3 distinct items with the ts and weight of their latest positive event.
    assert profile.history == [("E", 200, 1.0), ("F", 260, 1.0), ("G", 300, 3.0)]
    assert profile.last_ts == 300 and profile.landmark_ms == 0


def test_interests_bookkeeping_of_the_sequence():
    profile, _ = run(SEQUENCE, CONFIG)
    # Stored values are w * 2^(t / H) against landmark 0; H is huge, so ~ the weight sums.
    assert profile.interests == pytest.approx({"A": 2.0, "B": 2.0, "C": 2.0, "D": 6.0, "E": 1.0, "F": 1.0, "G": 3.0}, rel=1e-9)
    # last_action is the latest *positive* event per item (C keeps add_to_cart after the removal).
    assert profile.last_action == {"A": VIEW, "B": CLICK, "C": ADD_TO_CART, "D": PURCHASE, "E": VIEW, "F": VIEW, "G": FAVORITE}
    assert profile.cart == {}  # C added at 20, removed at 40
    assert profile.purchased == {"D": 50}


def test_cart_and_purchase():
    profile, _ = run([("A", ADD_TO_CART, 0, 4.0), ("B", ADD_TO_CART, 5, 4.0), ("A", PURCHASE, 9, 6.0), ("B", ADD_TO_CART, 12, 4.0)], CONFIG)
    assert profile.cart == {"B": 12}  # purchase takes A out of the cart; re-adding B updates its time
    assert profile.purchased == {"A": 9}
    assert not profile.is_empty


def test_negative_weight_lowers_interest_and_forms_no_pair():
    profile, out = run([("A", VIEW, 0, 1.0), ("B", REMOVE_FROM_CART, 5, -2.0), ("A", REMOVE_FROM_CART, 6, -2.0)], CONFIG)
    assert pairs(out) == [] and out.items == ["A"]
    assert profile.interests == pytest.approx({"A": -1.0, "B": -2.0}, rel=1e-9)
    assert profile.history == [("A", 0, 1.0)]
    assert profile.last_action == {"A": VIEW}  # negative events name no action
    assert top_interests(profile, 10, CONFIG) == []  # only positive interests are listed


def test_zero_weight_changes_no_interest():
    profile, out = run([("A", VIEW, 0, 0.0), ("A", PURCHASE, 1, 0.0)], CONFIG)
    assert profile.interests == {} and out.items == [] and profile.purchased == {"A": 1}


def test_history_dedup_and_truncation():
    config = CONFIG.replace(history_length=2)
    profile, out = run([("A", VIEW, 0, 1.0), ("B", VIEW, 1, 1.0), ("A", VIEW, 2, 5.0), ("C", VIEW, 3, 1.0)], config)
    # After A again, history is [B, A(5)]; C pairs with B and A (min(1, 5) = 1); history -> [A, C].
    assert profile.history == [("A", 2, 5.0), ("C", 3, 1.0)]
    assert pairs(out)[-4:] == [("C", "B", 1.0), ("B", "C", 1.0), ("C", "A", 1.0), ("A", "C", 1.0)]
    # With history_length 1, an event pairs only with the single latest other item.
    _, out1 = run([("A", VIEW, 0, 1.0), ("B", VIEW, 1, 1.0), ("C", VIEW, 2, 1.0)], CONFIG.replace(history_length=1))
    assert pairs(out1) == [("B", "A", 1.0), ("A", "B", 1.0), ("C", "B", 1.0), ("B", "C", 1.0)]


def test_forget():
    config = CONFIG.replace(max_clock_skew_ms=10)
    profile, _ = run([("A", VIEW, 0, 1.0), ("", FORGET, 5, 0.0)], config)
    assert profile.is_forgotten and scorable(profile) is None and profile.forgotten_until == 15
    existing, _ = run([("A", VIEW, 0, 1.0)], config)
    assert scorable(run([("", FORGET, 9, 0.0)], config, profile=existing)[0]) is None
    # Events after the forget plus the clock skew start a fresh profile.
    profile, out = run([("A", ADD_TO_CART, 0, 4.0), ("", FORGET, 5, 0.0), ("B", VIEW, 20, 1.0)], config)
    assert set(profile.interests) == {"B"} and profile.cart == {} and profile.history == [("B", 20, 1.0)]
    assert pairs(out) == []  # B does not pair with the forgotten A
    assert profile.last_ts == 20 and scorable(profile) is profile
    assert run([], config)[0] is None  # no events, no profile


def test_a_forget_wins_over_events_stamped_up_to_the_clock_skew_after_it():
    """A producer stamped a view 240 s ahead of its clock and sent it before the forget (issue 16, item 3)."""
    config = CONFIG.replace(max_clock_skew_ms=300_000)
    profile, out = run([("", FORGET, 1_000, 0.0), ("A", VIEW, 241_000, 1.0), ("B", PURCHASE, 301_000, 6.0)], config)
    assert scorable(profile) is None and out.items == [] and out.trend_items == []
    # Applied in arrival order (the live job): the view came first, the forget still clears it,
    # and a later-arriving copy stamped before forget + skew stays dropped.
    viewed, _ = run([("A", VIEW, 241_000, 1.0)], config)
    forgotten, _ = run([("", FORGET, 1_000, 0.0), ("A", VIEW, 240_000, 1.0)], config, profile=viewed)
    assert scorable(forgotten) is None
    # Past the skew the user is back, and the tombstone still holds for stragglers.
    back, _ = run([("C", VIEW, 301_001, 1.0), ("D", VIEW, 200_000, 1.0)], config, profile=forgotten)
    assert set(back.interests) == {"C"} and back.forgotten_until == 301_000


def test_pruning_keeps_the_strongest_with_id_tie_break():
    config = CONFIG.replace(max_user_items=4)  # prune when more than 4 + 4 // 4 = 5 items
    events = [(item, VIEW, 0, w) for item, w in [("a", 5.0), ("b", 2.0), ("c", 3.0), ("d", 2.0), ("e", 1.0)]]
    profile, _ = run(events, config)
    assert len(profile.interests) == 5  # not over the threshold yet
    profile, _ = run([("f", VIEW, 0, 2.0)], config, profile)
    # Ranked: a 5, c 3, then b, d, f tied at 2 -> by id: b, d kept; f and e dropped.
    assert profile.interests == {"a": 5.0, "b": 2.0, "c": 3.0, "d": 2.0}
    assert set(profile.last_action) == {"a", "b", "c", "d"}
    assert [h[0] for h in profile.history] == ["d", "e", "f"]  # history is not pruned


def test_top_interests_decay_and_order():
    config = ModelConfig(half_life_ms=1000, interest_items=2)
    profile, _ = run([("A", VIEW, 0, 4.0), ("Z", VIEW, 500, 0.5), ("B", VIEW, 2000, 1.0), ("C", REMOVE_FROM_CART, 2000, -1.0)], config)
    # At 2000: A = 4 * 2^-2 = 1, B = 1 (tie: by id), Z = 0.5 * 2^-1.5 = 0.1768; C negative: left out.
    assert top_interests(profile, 2000, config, limit=5) == [("A", 1.0), ("B", 1.0), ("Z", pytest.approx(0.5 * 2**-1.5))]
    assert [i for i, _ in top_interests(profile, 2000, config)] == ["A", "B"]  # default limit: interest_items
    # One half-life later every value halves.
    assert top_interests(profile, 3000, config, limit=2) == [("A", 0.5), ("B", 0.5)]


def test_renormalisation_inside_the_profile_matches_naive_decay():
    half_life = 1000
    config = ModelConfig(half_life_ms=half_life)
    ts = [0, 30_000, 100_000, 100_500, 250_000]  # spans 250 half-lives: two landmark moves
    items = ["A", "B", "A", "C", "A"]
    weights = [3.0, 1.0, 2.0, 1.0, 0.5]
    profile, _ = run([(i, VIEW, t, w) for i, t, w in zip(items, ts, weights)], config)
    assert profile.landmark_ms % half_life == 0 and profile.landmark_ms > 0
    now = 251_000
    got = dict(top_interests(profile, now, config))
    for item in "ABC":
        mask = np.array([i == item for i in items])
        expected = naive_decayed_sum(np.array(weights)[mask], np.array(ts)[mask], now, half_life)
        if expected > 1e-300:
            assert got[item] == pytest.approx(expected, rel=1e-9), item


def test_same_events_any_batching_same_state():
    whole, out_whole = run(SEQUENCE, CONFIG)
    first, out_a = run(SEQUENCE[:4], CONFIG)
    second, out_b = run(SEQUENCE[4:], CONFIG, profile=first)
    assert second == whole
    out_a.extend(out_b)
    assert out_a == out_whole


def test_group_by_user():
    users = np.array(["b", "a", "b", "c", "a", "b"], dtype=object)
    groups = group_by_user(users)
    assert [u for u, _ in groups] == ["b", "a", "c"]  # first-appearance order
    assert [rows.tolist() for _, rows in groups] == [[0, 2, 5], [1, 4], [3]]  # original order
    assert group_by_user(np.array([], dtype=object)) == []


def test_empty_profile():
    assert UserProfile().is_empty
    assert not UserProfile(purchased={"x": 1}).is_empty


@pytest.mark.parametrize("seed", range(5))
def test_apply_window_is_the_per_user_loop(seed):
    """apply_window (the step the engine and the user-state operator share) applies each user's
    events with apply_user_events, users in first-appearance order: same profiles, same deltas in
    the same order, and each user's latest event time; on random streams with forgets, cart
    removals, purchases, ties in time and pruning."""
    rng = np.random.default_rng(seed)
    n = 400
    config = ModelConfig(max_user_items=4, max_clock_skew_ms=50, half_life_ms=500)
    users = np.array([f"u{k}" for k in rng.integers(0, 12, n)], dtype=object)
    items = np.array([f"i{k}" for k in rng.integers(0, 15, n)], dtype=object)
    codes = rng.choice([VIEW, CLICK, ADD_TO_CART, REMOVE_FROM_CART, PURCHASE, FAVORITE, FORGET], n, p=[0.4, 0.15, 0.15, 0.1, 0.1, 0.05, 0.05])
    ts = np.sort(rng.integers(0, 20_000, n))  # repeats: ties in time
    weights = np.where(codes == REMOVE_FROM_CART, -1.0, rng.integers(0, 4, n).astype(np.float64))
    start = {"u0": apply_user_events(None, ["i1", "i2"], [VIEW, ADD_TO_CART], [0, 1], [1.0, 2.0], config, ItemContribution())}

    expected_out = ItemContribution()
    expected = []
    for user, rows in group_by_user(users):
        profile = apply_user_events(copy.deepcopy(start.get(user)), items[rows].tolist(), codes[rows].tolist(), ts[rows].tolist(), weights[rows].tolist(), config, expected_out)
        expected.append((user, profile, int(ts[rows].max())))
    out = ItemContribution()
    got = apply_window(lambda u: copy.deepcopy(start.get(u)), users, items, codes, ts, weights, config, out)
    assert got == expected
    assert out == expected_out and out.pair_a
    assert any(p.is_forgotten for _, p, _ in got)


def random_events(seed: int, n: int = 300, items: int = 12, span_ms: int = 40 * 3600 * 1000) -> list[tuple[str, int, int, float]]:
    """A user's events over ``span_ms`` (sorted), with negative weights and a purchase now and then."""
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(0, span_ms, n))
    codes = rng.choice([VIEW, CLICK, ADD_TO_CART, REMOVE_FROM_CART, PURCHASE], n, p=[0.6, 0.2, 0.1, 0.05, 0.05])
    weight = {VIEW: 1.0, CLICK: 2.0, ADD_TO_CART: 4.0, REMOVE_FROM_CART: -2.0, PURCHASE: 6.0}
    return [(f"i{int(rng.integers(items))}", int(c), int(t), weight[int(c)]) for c, t in zip(codes, ts)]


@pytest.mark.parametrize("seed", range(4))
def test_a_variant_half_life_sum_is_the_profile_a_job_with_that_half_life_keeps(seed):
    # Hours-long half-lives over 40 h cross the renormalisation threshold of the short one.
    main, variant = 6 * 3600 * 1000, 1800 * 1000
    events = random_events(seed)
    # Listed twice, and the job's own listed too: one extra sum all the same.
    both = ModelConfig(half_life_ms=main, max_user_items=8, variant_half_lives_ms=(variant, main, variant))
    kept, _ = run(events, both)
    # The main sum is untouched by the extra one; the job's own half-life in the list keeps no copy.
    assert kept.interests == run(events, ModelConfig(half_life_ms=main, max_user_items=8))[0].interests
    assert set(kept.variant_interests) == {variant}
    # Pruning follows the main sums (an item pruned and met again restarts in both), so the
    # variant keeps the main sum's items; its values are checked without pruning below.
    seen = with_half_life(kept, variant, main, events[-1][2])
    assert set(seen.interests) == set(kept.interests) and len(kept.interests) <= 8 + 8 // 4
    now = events[-1][2] + 600_000
    # Without pruning the two are bit-identical.
    unpruned = ModelConfig(half_life_ms=main, variant_half_lives_ms=(variant, variant))
    kept, _ = run(events, unpruned)
    reference, _ = run(events, ModelConfig(half_life_ms=variant))
    seen = with_half_life(kept, variant, main, now)
    assert (seen.landmark_ms, seen.interests) == (reference.landmark_ms, reference.interests)
    assert with_half_life(kept, main, main, now) is kept


def test_a_variant_half_life_added_later_is_seeded_from_the_main_sum_then_exact():
    main, variant = 24 * 3600 * 1000, 3600 * 1000
    events = random_events(11, n=100)
    before, after = events[:50], events[50:]
    profile, _ = run(before, ModelConfig(half_life_ms=main))
    assert profile.variant_interests == {}
    t = after[0][2]
    # Scored before its next event: the main sums re-expressed at the scoring time.
    seen = with_half_life(profile, variant, main, t)
    as_seen = dict(top_interests(seen, t, ModelConfig(half_life_ms=variant), limit=100))
    as_kept = dict(top_interests(profile, t, ModelConfig(half_life_ms=main), limit=100))
    assert as_seen.keys() == as_kept.keys() and all(as_seen[i] == pytest.approx(v, rel=1e-12) for i, v in as_kept.items())
    # Its next event seeds the sum from the main sum at that time; later events decay with the variant's half-life.
    seed_values = {i: v * 2.0 ** ((profile.landmark_ms - t) / main) for i, v in profile.interests.items()}
    profile, _ = run(after, ModelConfig(half_life_ms=main, variant_half_lives_ms=(variant,)), profile=profile)
    now = after[-1][2]
    expected = dict(seed_values)
    for item, _, ts, w in after:  # the definition, event by event
        expected = {i: v * 2.0 ** (-(ts - t) / variant) for i, v in expected.items()}
        expected[item] = expected.get(item, 0.0) + w
        t = ts
    got = dict(top_interests(with_half_life(profile, variant, main, now), now, ModelConfig(half_life_ms=variant), limit=100))
    positive = {i: v for i, v in expected.items() if v > 0}
    assert set(got) == set(positive)
    for item, value in positive.items():
        assert got[item] == pytest.approx(value, rel=1e-9)
    # A half-life no longer listed is dropped at the user's next event.
    profile, _ = run([("i1", VIEW, now + 1, 1.0)], ModelConfig(half_life_ms=main), profile=profile)
    assert profile.variant_interests == {}


def test_variant_sums_survive_the_state_encoding():
    from state.schemas import decode_profile, encode_profile

    profile, _ = run(random_events(3, n=60), ModelConfig(half_life_ms=86_400_000, variant_half_lives_ms=(3_600_000, 600_000)))
    assert set(profile.variant_interests) == {3_600_000, 600_000}
    assert decode_profile(encode_profile(profile)) == profile
    plain, _ = run(random_events(3, n=60), ModelConfig(half_life_ms=86_400_000))
    assert b'"x"' not in encode_profile(plain)  # no extra bytes when none are kept
