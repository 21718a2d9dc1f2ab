"""Per-user state and its update by a user's events: decayed interests, history, cart, purchases.

The update also produces the user's contribution to the item model: item
occurrence weights and co-occurrence pairs.  An event on item ``a`` with weight
``w > 0`` at time ``t`` pairs with each distinct item ``b != a`` among the
user's ``history_length`` most recent items seen within ``session_gap_ms``
before ``t``; the pair weight is ``min(w, w_b)`` (``w_b``: weight of the
latest event on ``b``), emitted in both directions.  Events with ``w <= 0``
(remove_from_cart) lower interest and form no pairs, so each event creates at
most ``2 * history_length`` pair entries.

Events of one user are applied one by one in event-time order, so every engine
that applies the same events computes bit-identical state, however it batches.

A ``forget`` event (privacy) clears the user and leaves a *tombstone*: an empty
profile whose ``forgotten_until`` is the forget's time plus the accepted clock
skew (``max_clock_skew_ms``).  Every later-applied event of the user stamped no
later than that is dropped, so an event a producer stamped ahead of its clock
and sent before the forget cannot bring the user back.  A tombstone is kept in
state like a profile (and expires like one); engines write nothing for it
(:func:`scorable`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from transforms.config import ModelConfig
from transforms.decay import forward_factor, initial_landmark, renormalise
from transforms.events import ADD_TO_CART, FORGET, PURCHASE, REMOVE_FROM_CART

NO_ACTION = -1


@dataclass
class UserProfile:
    """Everything flowrec keeps about one user.

    ``interests`` are forward-decayed sums against ``landmark_ms`` (see
    :mod:`transforms.decay`); ``last_action`` is the event code of the latest
    positive event per item, for explanations; ``history`` holds
    ``(item, ts, weight)`` of distinct recent items, oldest first.
    """

    landmark_ms: int = 0
    last_ts: int = 0
    interests: dict[str, float] = field(default_factory=dict)
    last_action: dict[str, int] = field(default_factory=dict)
    history: list[tuple[str, int, float]] = field(default_factory=list)
    cart: dict[str, int] = field(default_factory=dict)
    purchased: dict[str, int] = field(default_factory=dict)
    # Events of this user stamped at or before this time (ms) are dropped (None: never forgotten).
    forgotten_until: int | None = None
    # One more forward-decayed sum of the same interests per half-life of
    # ``ModelConfig.variant_half_lives_ms`` (for experiments): half-life ->
    # (landmark, item -> sum); always the same items as ``interests``.
    variant_interests: dict[int, tuple[int, dict[str, float]]] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not self.interests and not self.history and not self.cart and not self.purchased

    @property
    def is_forgotten(self) -> bool:
        """A tombstone: the user was forgotten and nothing has been kept about them since."""
        return self.forgotten_until is not None and self.is_empty


def scorable(profile: UserProfile | None) -> UserProfile | None:
    """The profile to write lists for; ``None`` for a user who was forgotten (their keys are deleted)."""
    return None if profile is None or profile.is_forgotten else profile


@dataclass
class ItemContribution:
    """What a group of events adds to the item model: occurrence weights and pair weights."""

    items: list[str] = field(default_factory=list)
    item_weights: list[float] = field(default_factory=list)
    pair_a: list[str] = field(default_factory=list)
    pair_b: list[str] = field(default_factory=list)
    pair_weights: list[float] = field(default_factory=list)
    # Positive event weights per item at event time, for trending.
    trend_items: list[str] = field(default_factory=list)
    trend_ts: list[int] = field(default_factory=list)
    trend_weights: list[float] = field(default_factory=list)

    def extend(self, other: "ItemContribution") -> None:
        for name in self.__dataclass_fields__:
            getattr(self, name).extend(getattr(other, name))


def apply_user_events(
    profile: UserProfile | None,
    items: list[str],
    codes: list[int],
    ts: list[int],
    weights: list[float],
    config: ModelConfig,
    out: ItemContribution,
) -> UserProfile | None:
    """Apply one user's events (in event-time order) to ``profile``; append item-model deltas to ``out``.

    Returns the new profile; after a ``forget`` event a tombstone (see the
    module docstring).  Units: weights are interest points; times ms.
    """
    half_life = config.half_life_ms
    variant_half_lives = config.extra_half_lives_ms()
    gap = config.session_gap_ms
    history_length = config.history_length
    prune_above = config.max_user_items + config.max_user_items // 4
    add_item, add_item_weight = out.items.append, out.item_weights.append
    add_trend_item, add_trend_ts, add_trend_weight = out.trend_items.append, out.trend_ts.append, out.trend_weights.append
    add_a, add_b, add_pair_weight = out.pair_a.append, out.pair_b.append, out.pair_weights.append
    for item, code, t, w in zip(items, codes, ts, weights):
        if code == FORGET:
            until = t + config.max_clock_skew_ms
            if profile is not None and profile.forgotten_until is not None:
                until = max(until, profile.forgotten_until)
            profile = UserProfile(last_ts=t, forgotten_until=until)
            continue
        if profile is not None and profile.forgotten_until is not None and t <= profile.forgotten_until:
            continue  # stamped before the forget took hold: the forget wins
        if profile is None or profile.is_forgotten:
            profile = UserProfile(landmark_ms=initial_landmark(t, half_life), last_ts=t, forgotten_until=None if profile is None else profile.forgotten_until)
        if variant_half_lives or profile.variant_interests:
            _add_variant_interests(profile, half_life, variant_half_lives, item, t, w)
        landmark, scale = renormalise(profile.landmark_ms, t, half_life)
        if scale != 1.0:
            profile.interests = {k: v * scale for k, v in profile.interests.items()}
            profile.landmark_ms = landmark
        if t > profile.last_ts:
            profile.last_ts = t
        if w != 0.0:
            interests = profile.interests
            interests[item] = interests.get(item, 0.0) + w * forward_factor(t, landmark, half_life)
        if w > 0.0:
            profile.last_action[item] = code
            add_item(item)
            add_item_weight(w)
            add_trend_item(item)
            add_trend_ts(t)
            add_trend_weight(w)
            history = profile.history
            repeated = False
            for other, other_ts, other_w in history:
                if other == item:
                    repeated = True
                elif t - other_ts <= gap:
                    pair_w = w if w < other_w else other_w
                    add_a(item)
                    add_b(other)
                    add_pair_weight(pair_w)
                    add_a(other)
                    add_b(item)
                    add_pair_weight(pair_w)
            history = [h for h in history if h[0] != item] if repeated else history[:]
            history.append((item, t, w))
            profile.history = history[-history_length:] if len(history) > history_length else history
        if code == ADD_TO_CART:
            profile.cart[item] = t
        elif code == REMOVE_FROM_CART or code == PURCHASE:
            profile.cart.pop(item, None)
        if code == PURCHASE:
            profile.purchased[item] = t
        if len(profile.interests) > prune_above:
            _prune(profile, config.max_user_items)
    return profile


def _decayed_sums_at(interests: dict[str, float], landmark_ms: int, half_life_ms: int, ts_ms: int, new_half_life_ms: int) -> tuple[int, dict[str, float]]:
    """Sums decayed with ``half_life_ms`` against ``landmark_ms``, re-expressed at ``ts_ms`` as sums
    decaying with ``new_half_life_ms``: equal values at ``ts_ms``, another decay from then on
    (against the new half-life's grid landmark at or before ``ts_ms``; no sums: none)."""
    landmark = initial_landmark(ts_ms, new_half_life_ms)
    factor = 2.0 ** ((landmark_ms - ts_ms) / half_life_ms) * forward_factor(ts_ms, landmark, new_half_life_ms)
    return landmark, {k: v * factor for k, v in interests.items()}


def _add_variant_interests(profile: UserProfile, main_half_life: int, half_lives: list[int], item: str, t: int, w: float) -> None:
    """The event ``(item, t, w)`` added to each variant half-life's sum (before the main sum takes it).

    A sum the profile lacks is seeded first from the main sum as it stands
    (decayed to ``t``); a sum of a half-life no longer configured is dropped.
    """
    sums = profile.variant_interests
    for stale in [h for h in sums if h not in half_lives]:
        del sums[stale]
    for half_life in half_lives:
        found = sums.get(half_life)
        if found is None:
            found = _decayed_sums_at(profile.interests, profile.landmark_ms, main_half_life, t, half_life)
        landmark, values = found
        new_landmark, scale = renormalise(landmark, t, half_life)
        if scale != 1.0:
            values = {k: v * scale for k, v in values.items()}
        if w != 0.0:
            values[item] = values.get(item, 0.0) + w * forward_factor(t, new_landmark, half_life)
        sums[half_life] = (new_landmark, values)


def apply_window(
    profile_of: Callable[[str], UserProfile | None],
    users: np.ndarray,
    items: np.ndarray,
    codes: np.ndarray,
    ts: np.ndarray,
    weights: np.ndarray,
    config: ModelConfig,
    out: ItemContribution,
) -> list[tuple[str, UserProfile | None, int]]:
    """Apply one window's events (columns, event-time order) to their users' profiles.

    ``profile_of(user)`` gives the user's current profile (None: unknown).
    Returns ``(user, new profile, latest event time of the user in these
    events)`` per user, users in first-appearance order; appends the item-model
    deltas to ``out``.  The one step the reference engine and the user-state
    operator share, so they apply events identically.
    """
    items_l, codes_l, ts_l, weights_l = items.tolist(), codes.tolist(), ts.tolist(), weights.tolist()
    changed = []
    for user, rows in group_by_user(users):
        picked = rows.tolist()
        times = [ts_l[r] for r in picked]
        profile = apply_user_events(
            profile_of(user),
            [items_l[r] for r in picked],
            [codes_l[r] for r in picked],
            times,
            [weights_l[r] for r in picked],
            config,
            out,
        )
        changed.append((user, profile, max(times)))
    return changed


def _prune(profile: UserProfile, keep: int) -> None:
    """Keep the ``keep`` strongest interests (ties: item id ascending), so state per user is bounded."""
    ranked = sorted(profile.interests.items(), key=lambda kv: (-kv[1], kv[0]))[:keep]
    kept = {item for item, _ in ranked}
    profile.interests = {item: value for item, value in profile.interests.items() if item in kept}
    profile.last_action = {item: code for item, code in profile.last_action.items() if item in kept}
    for half_life, (landmark, values) in list(profile.variant_interests.items()):
        profile.variant_interests[half_life] = (landmark, {item: value for item, value in values.items() if item in kept})


def group_by_user(users: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Row indices per user, users in first-appearance order, rows in their original order."""
    order = np.argsort(users, kind="stable")
    sorted_users = users[order]
    if len(sorted_users) == 0:
        return []
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    ends = np.r_[starts[1:], len(order)]
    groups = [(sorted_users[s], order[s:e]) for s, e in zip(starts, ends)]
    groups.sort(key=lambda g: g[1][0])
    return groups


def top_interests(profile: UserProfile, now_ms: int, config: ModelConfig, limit: int | None = None) -> list[tuple[str, float]]:
    """The user's strongest positive interests decayed to ``now_ms``, strongest first (ties: id)."""
    scale = 2.0 ** ((profile.landmark_ms - now_ms) / config.half_life_ms)
    # An interest decayed below the smallest float is no interest: it would weigh 0 in every sum.
    decayed = ((item, value * scale) for item, value in profile.interests.items() if value > 0)
    ranked = sorted(((item, value) for item, value in decayed if value > 0), key=lambda kv: (-kv[1], kv[0]))
    return ranked[: limit or config.interest_items]


def with_half_life(profile: UserProfile | None, half_life_ms: int, main_half_life_ms: int, now_ms: int) -> UserProfile | None:
    """``profile`` as seen by a variant that decays interests with ``half_life_ms`` (for scoring only).

    Its interests are the profile's sum for that half-life
    (``ModelConfig.variant_half_lives_ms``); a profile not updated since the
    half-life was configured has none yet and is seen with its main sum
    re-expressed at ``now_ms`` (as its next event would seed it).  The main
    half-life returns ``profile`` itself.
    """
    if profile is None or half_life_ms == main_half_life_ms:
        return profile
    found = profile.variant_interests.get(half_life_ms)
    if found is None:
        found = _decayed_sums_at(profile.interests, profile.landmark_ms, main_half_life_ms, now_ms, half_life_ms)
    landmark, values = found
    return replace(profile, landmark_ms=landmark, interests=values, variant_interests={})
