"""The batched scorer: a user's lists do not depend on who else is in the batch.

This is what lets the Flink job (each parallel scorer scores its own users of
a window) equal the reference engine (which scores all of them at once), and
the evaluation (which scores users in chunks) equal both.  The model is
random but seeded: many items with tied similarities (to exercise the id
tie-break), categories for the cap, out-of-stock items, users with carts,
purchases, dislikes and none at all.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from transforms.config import ModelConfig
from transforms.events import CLICK, PURCHASE, VIEW
from transforms.profile import UserProfile
from transforms.scoring import AllowedMemo, ItemCodes, ScoringModel, items_allowed, score_user, score_users

CONFIG = ModelConfig(half_life_ms=10**12, weight_cf=1.0, weight_content=0.3, weight_category=0.2, weight_popularity=0.05, weight_recent=0.1)


def random_model(rng: random.Random, items: int = 300) -> ScoringModel:
    ids = [f"item-{k:04d}" for k in range(items)]
    categories = ["books", "toys", "garden", "food"]

    def neighbours(k: int) -> tuple[np.ndarray, np.ndarray]:
        others = rng.sample(ids, rng.randint(0, 25))
        # Coarse values: many ties, so ordering by id matters.
        sims = sorted((rng.randint(1, 8) / 8 for _ in others), reverse=True)
        return np.array(others, dtype=object), np.array(sims, dtype=np.float64)

    def trend(members: list[str]) -> tuple[np.ndarray, np.ndarray]:
        chosen = rng.sample(members, min(len(members), 30))
        values = sorted((float(rng.randint(1, 20)) for _ in chosen), reverse=True)
        return np.array(chosen, dtype=object), np.array(values)

    facts = {i: (rng.choice(categories), rng.random() > 0.05) for i in ids}
    return ScoringModel(
        neighbours={i: neighbours(k) for k, i in enumerate(ids) if rng.random() > 0.1},
        content={i: neighbours(k) for k, i in enumerate(ids) if rng.random() > 0.3},
        trending_global=trend(ids),
        trending_by_category={c: trend([i for i in ids if facts[i][0] == c]) for c in categories},
        facts=facts,
    )


def random_profile(rng: random.Random, model: ScoringModel) -> UserProfile | None:
    ids = sorted(model.facts)
    if rng.random() < 0.1:
        return None
    seen = rng.sample(ids, rng.randint(0, 40))
    interests = {i: rng.choice([-1.0, 0.5, 1.0, 2.0, 3.0]) for i in seen}
    return UserProfile(
        landmark_ms=0,
        last_ts=0,
        interests=interests,
        last_action={i: rng.choice([VIEW, CLICK, PURCHASE]) for i in seen if interests[i] > 0},
        cart={i: 1 for i in rng.sample(ids, rng.choice([0, 0, 1, 3]))},
        purchased={i: 1 for i in rng.sample(seen, min(len(seen), rng.choice([0, 2])))},
    )


@pytest.mark.parametrize(
    "config",
    [
        CONFIG,
        CONFIG.replace(max_per_category=2),
        CONFIG.replace(max_per_category=1, top_n=5, exclude_seen=True),
        CONFIG.replace(weight_recent=0.0, weight_popularity=0.0, repeat_purchase_categories=("food",)),
    ],
)
def test_each_users_lists_are_independent_of_the_batch(config):
    rng = random.Random(7)
    model = random_model(rng)
    profiles = [random_profile(rng, model) for _ in range(120)]
    together = score_users(profiles, 0, model, config)
    alone = [score_user(p, 0, model, config) for p in profiles]
    assert together == alone
    # Another split and order of the same users.
    order = list(range(len(profiles)))
    rng.shuffle(order)
    shuffled = score_users([profiles[i] for i in order[:70]], 0, model, config) + score_users([profiles[i] for i in order[70:]], 0, model, config)
    assert [shuffled[order.index(k)] for k in range(len(profiles))] == alone
    assert any(lists.home for lists in alone) and any(lists.cart for lists in alone)


def test_lists_are_ranked_by_score_then_item_id_with_the_category_cap():
    rng = random.Random(11)
    model = random_model(rng)
    config = CONFIG.replace(max_per_category=2)
    for lists in score_users([random_profile(rng, model) for _ in range(60)], 0, model, config):
        for ranked in (lists.home, lists.cart):
            keys = [(-entry.score, entry.item) for entry in ranked]
            assert keys == sorted(keys)
            categories = [model.top_category(entry.item) for entry in ranked]
            assert all(categories.count(c) <= 2 for c in categories)
            assert all(model.facts[entry.item][1] for entry in ranked)  # in stock


def test_excludes_apply_per_user():
    rng = random.Random(3)
    model = random_model(rng)
    profiles = [random_profile(rng, model) for _ in range(20)]
    plain = score_users(profiles, 0, model, CONFIG)
    excludes = [{entry.item for entry in lists.home[:3]} for lists in plain]
    excluded = score_users(profiles, 0, model, CONFIG, excludes)
    for lists, dropped in zip(excluded, excludes):
        assert not dropped & {entry.item for entry in lists.home}
    assert excluded == [score_user(p, 0, model, CONFIG, e) for p, e in zip(profiles, excludes)]


def test_an_empty_batch_scores_nothing():
    assert score_users([], 0, ScoringModel(), CONFIG) == []


def test_interests_decayed_to_nothing_are_a_cold_start_not_a_crash():
    """A half-life far below the time since the events (a derived or tuned one) decays interests to 0.0."""
    rng = random.Random(5)
    model = random_model(rng)
    profile = UserProfile(landmark_ms=0, last_ts=0, interests={"item-0001": 3.0, "item-0002": 1.0}, last_action={"item-0001": VIEW, "item-0002": VIEW})
    config = CONFIG.replace(half_life_ms=1_000)
    lists = score_user(profile, 10**9, model, config)
    assert lists.interests == [] and lists.categories == {}
    assert lists.home and {entry.reason.code for entry in lists.home} == {"trending_now"}


# -- the business filters' memo kept across batches ----------------------------------------------


def test_the_allowed_memo_holds_until_a_fact_takes_effect_in_the_windows_it_would_serve():
    memo = AllowedMemo()
    first = memo.for_window(5)
    assert memo.for_window(6) is first  # no fact since: the same results hold
    memo.fact_at(8)  # a fact of a later window: the memo still serves windows before it
    assert memo.for_window(7) is first
    assert memo.for_window(8) is not first  # window 8 reads the new fact
    second = memo.for_window(8)
    memo.fact_at(8)  # another version for a window already served
    assert memo.for_window(9) is not second
    third = memo.for_window(9)
    assert memo.for_window(4) is not third  # an earlier window than any served: start afresh


@pytest.mark.parametrize("seed", range(8))
def test_items_allowed_with_a_kept_memo_equal_a_fresh_check_whatever_the_fact_arrivals(seed):
    """Fact versions (item -> [(window, fact)]) arrive between rounds, some for windows already scored;
    each round closes the windows up to its watermark in any order (as a scorer's keys do), and a
    scoring sees the latest version of each fact produced in a window <= its own.  Half the seeds
    tell the memo which windows are settled (those up to the round before), half do not."""
    rng = random.Random(seed)
    items = [f"i{k}" for k in range(40)]
    versions: dict[str, list[tuple[int, tuple[str, bool]]]] = {}
    config = ModelConfig(exclude_out_of_stock=True, deny_categories=("c2",))

    class View:
        def __init__(self, window):
            self.window = window

        def get(self, item, default=None):
            seen = [fact for w, fact in versions.get(item, []) if w <= self.window]
            return seen[-1] if seen else default

    memo = AllowedMemo()
    codes = ItemCodes()
    before, watermark = None, 0
    rejected = resets = scorings = 0
    last_memo = None
    for _ in range(150):
        for _ in range(rng.randint(0, 3)):
            item = rng.choice(items)
            at = watermark + rng.randint(-6, 8)  # sometimes for a window already scored
            versions.setdefault(item, []).append((at, (rng.choice(("c1", "c2", "c3")), rng.random() < 0.7)))
            memo.fact_at(at)
        before, watermark = watermark, watermark + rng.randint(1, 8)
        windows = list(range(before + 1, watermark + 1))
        rng.shuffle(windows)
        for window in windows[: rng.randint(1, len(windows))]:
            picked = codes.vocab.encode(rng.sample(items, 15))
            kept_memo = memo.for_window(window, before if seed % 2 else None)
            resets += kept_memo is not last_memo
            scorings += 1
            last_memo = kept_memo
            kept = items_allowed(picked, ScoringModel(facts=View(window), codes=codes, allowed_memo=kept_memo), config)
            fresh = items_allowed(picked, ScoringModel(facts=View(window), codes=codes), config)
            assert kept.tolist() == fresh.tolist()
            rejected += int((~fresh).sum())
    assert rejected > 0  # the filters did reject items along the way
    assert 1 < resets < scorings  # the memo was both kept and emptied
