"""Learned blend weights (transforms.blend) on synthetic data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from transforms import blend as B
from transforms.blend import BlendLearner, BlendMemo, _sorted_member, blend_settings, choose, learn, memos, rewards, settings_key
from transforms.catalog import CatalogItem
from transforms.config import ModelConfig
from transforms.engine import replay
from transforms.events import EventBatch, parse_records
from transforms.profile import UserProfile
from transforms.cooccurrence import Vocabulary
from transforms.scoring import PartEntries

CONFIG = ModelConfig(weight_cf=1.0, weight_content=0.5, weight_category=0.0, weight_popularity=0.0, blend_learning=True, blend_margin=0.5)


def test_settings_are_the_configured_weights_and_one_lean_per_configured_part():
    settings = blend_settings(CONFIG)
    assert [s.name for s in settings] == ["configured", "lean_cf", "lean_content"]
    assert settings[0].applied(CONFIG) is CONFIG
    lean_content = settings[2].weights(CONFIG)
    # Bounds: the leaning part gets blend_lean x the configured total; parts left at 0 stay at 0.
    assert lean_content["weight_content"] == pytest.approx(3.0 * 1.5)
    assert lean_content["weight_cf"] == 1.0
    assert lean_content["weight_category"] == 0.0 and lean_content["weight_embedding"] == 0.0


def test_a_single_part_has_nothing_to_learn():
    one = CONFIG.replace(weight_content=0.0)
    assert [s.name for s in blend_settings(one)] == ["configured"]


def test_choice_keeps_the_served_setting_within_the_margin_and_breaks_ties_by_order():
    assert choose([1.0, 1.4, 0.0], current=0, margin=0.5) == 0
    assert choose([1.0, 1.6, 0.0], current=0, margin=0.5) == 1
    assert choose([2.0, 2.0, 2.0], current=2, margin=0.0) == 2
    assert choose([2.0, 2.0, 1.0], current=2, margin=0.0) == 0


def test_learning_is_a_discounted_sum_and_independent_of_the_users_order():
    settings = blend_settings(CONFIG)
    fresh = BlendLearner.fresh(settings)
    a = learn(fresh, [[0.0, 1.0, 0.0], [0.0, 0.5, 1.0]], CONFIG)
    b = learn(fresh, [[0.0, 0.5, 1.0], [0.0, 1.0, 0.0]], CONFIG)
    assert a == b
    assert a.current == 1 and a.observations == 2
    assert a.gains == pytest.approx([0.0, 1.5, 1.0])
    halved = learn(a, [[0.0, 0.0, 0.0]] * int(CONFIG.blend_half_life), CONFIG)
    assert halved.gains == pytest.approx([0.0, 0.75, 0.5])


def _profile(history: list[tuple[str, int, float]], touched: dict[str, float] | None = None) -> UserProfile:
    return UserProfile(last_ts=history[-1][1] if history else 0, interests=dict(touched or {}), history=history)


def test_memo_ranks_each_setting_without_touched_items_and_ties_by_id():
    settings = blend_settings(CONFIG)  # configured, lean_cf, lean_content
    # One user; cf says a > b, content says c > d; "seen" is already touched and never ranked.
    row = np.zeros(6, dtype=np.intp)
    item = np.array(["a", "b", "c", "d", "seen", "e"], dtype=object)
    part = np.array([0, 0, 1, 1, 1, 1], dtype=np.intp)  # cf, cf, content x4
    # Weighted as served by the configured setting (cf 1.0, content 0.5).
    value = np.array([1.0, 0.8, 0.5, 0.4, 0.5, 0.4])
    vocab = Vocabulary(["seen", "e", "d", "c", "b", "a"])  # codes in another order than the ids
    entries = PartEntries(row, vocab.encode(item.tolist()), part, value, vocab)
    found = memos(["u"], [_profile([("seen", 1, 1.0)], {"seen": 1.0})], entries, settings, settings[0], 100, k=3)
    memo = found["u"]
    ranked = [[memo.items[i] for i in r] for r in memo.ranked]
    assert ranked[0] == ["a", "b", "c"]
    assert ranked[1] == ["a", "b", "c"]
    # Leaning on content: c first, then d and e tie (4.5 * 0.8): item id order.
    assert ranked[2] == ["c", "d", "e"]
    assert "seen" not in memo.items


def test_rewards_credit_the_items_touched_since_the_memo_by_their_rank():
    key = settings_key(blend_settings(CONFIG))
    memo = BlendMemo(100, key, ("a", "b", "c"), ((0, 1), (1, 0), (2,)))
    touched_after = _profile([("a", 50, 1.0), ("b", 150, 1.0), ("z", 160, 1.0)])
    assert rewards(memo, touched_after, 200, key, CONFIG) == pytest.approx([B.gain(1), B.gain(0), 0.0])
    # Nothing touched since, another settings list, or a memo past blend_memo_ms: no credit.
    assert rewards(memo, _profile([("b", 90, 1.0)]), 200, key, CONFIG) is None
    assert rewards(memo, touched_after, 200, "other", CONFIG) is None
    assert rewards(memo, touched_after, 100 + CONFIG.blend_memo_ms + 1, key, CONFIG) is None
    # Negative events (remove from cart) earn nothing.
    assert rewards(memo, _profile([("b", 150, -2.0)]), 200, key, CONFIG) is None


def _oracle_shop(users: int = 40, steps: int = 12) -> tuple[EventBatch, list[CatalogItem]]:
    """Each user walks a chain of items i0 -> i1 -> ...: the content part knows the chain (an
    item's title shares a word with its predecessor and its successor only, and the predecessor
    is already touched), while co-occurrence mostly pairs items with decoys that never come next."""
    catalog = []
    for k in range(steps + 1):
        catalog.append(CatalogItem(item_id=f"i{k:02d}", title=f"chain{k} chain{k + 1}", category="shop/a", ts=1_600_000_000_000))
    records = []
    t = 1_700_000_000_000
    for step in range(steps):
        for u in range(users):
            # Users also view a shared decoy item, so co-occurrence pushes the decoy and its partners.
            records.append({"user_id": f"u{u:03d}", "item_id": f"i{step:02d}", "event_type": "view", "ts": t})
            records.append({"user_id": f"u{u:03d}", "item_id": f"decoy{(u + step) % 5}", "event_type": "view", "ts": t + 1})
            t += 1_000
    return parse_records(records).events, catalog


def test_a_part_that_predicts_the_next_item_wins_its_weight():
    events, catalog = _oracle_shop()
    config = CONFIG.replace(weight_cf=1.0, weight_content=0.05, blend_margin=0.0, content_neighbours=2)
    engine, _ = replay(events, config, catalog, user_shards=2)
    weights = engine.blend_weights()
    assert set(weights) == {0, 1}
    assert {w["setting"] for w in weights.values()} == {"lean_content"}


def test_off_keeps_the_fixed_blend_exactly():
    events, catalog = _oracle_shop(users=10, steps=4)
    on = CONFIG.replace(blend_margin=1e9)  # learns, but never leaves the configured weights
    off = CONFIG.replace(blend_learning=False)
    _, with_learning = replay(events, on, catalog)
    _, without = replay(events, off, catalog)
    assert with_learning.users == without.users


def test_shards_match_the_jobs():
    from pipelines.messages import shard_of

    for user in ("u1", "alice", "x" * 100, "42"):
        assert B.user_shard(user, 8) == shard_of(user, 8)


def test_cart_settings_lean_on_cf_or_content_only():
    config = CONFIG.replace(weight_category=0.2, weight_popularity=0.05)
    cart = B.context_settings(config, "cart")
    assert [s.name for s in cart] == ["configured", "lean_cf", "lean_content"]
    # Leaning is relative to the cart's two parts only (cf 1.0 + content 0.5).
    assert cart[2].weights(config)["weight_content"] == pytest.approx(3.0 * 1.5)


def test_cart_memo_ranks_each_settings_complements_of_the_cart():
    from transforms.scoring import ScoringModel

    model = ScoringModel(
        neighbours={"c1": (np.array(["x", "y"], dtype=object), np.array([1.0, 0.5]))},
        content={"c1": (np.array(["z", "y", "seen"], dtype=object), np.array([1.0, 0.9, 0.9]))},
    )
    profile = UserProfile(last_ts=1, interests={"c1": 4.0, "seen": 1.0}, history=[("c1", 1, 4.0)], cart={"c1": 1})
    settings = B.context_settings(CONFIG, "cart")
    memo = B.cart_memos(["u"], [profile], model, CONFIG, settings, 100, k=2)["u"]
    ranked = [[memo.items[i] for i in r] for r in memo.ranked]
    # configured: x 1.0, y 0.5 + 0.45, z 0.5 -> x, y; lean on content (4.5): z 4.5, y 0.5 + 4.05 -> y, z.
    assert ranked[0] == ["x", "y"]
    assert ranked[2] == ["y", "z"]
    assert "seen" not in memo.items


def test_memos_of_both_contexts_are_kept_apart():
    assert B.memo_key("home", "u1") == "u1"
    assert B.memo_key("cart", "u1") == "cart/u1"


def test_while_an_experiment_runs_its_variants_score_and_the_blend_learns_nothing():
    from transforms.experiments import ExperimentStart, ExperimentStop, parse_experiment

    events, catalog = _oracle_shop(users=20, steps=6)
    config = CONFIG.replace(weight_cf=1.0, weight_content=0.05, blend_margin=0.0, content_neighbours=2)
    experiment = parse_experiment({"id": "e1", "variants": {"a": {"share": 0.5}, "b": {"share": 0.5, "preset": "popularity"}}})
    first, last = int(events.ts.min()), int(events.ts.max())
    # In effect for the whole replay: every list is a variant's, nothing is learned.
    during, final = replay(events, config, catalog, experiments=[ExperimentStart(experiment, first - 1_000)], user_shards=2)
    assert all(learner.observations == 0 for shard in during.blend.values() for learner in shard.learners.values())
    assert not any(shard.memos for shard in during.blend.values())
    assert {lists.home_from[0] for _, lists in final.users.values()} == {"e1"}
    # Stopped before the end: learning resumes and the chain still wins.
    after, _ = replay(events, config, catalog, experiments=[ExperimentStart(experiment, first - 1_000), ExperimentStop("e1", first + (last - first) // 3)], user_shards=2)
    assert any(learner.observations > 0 for shard in after.blend.values() for learner in shard.learners.values())


@pytest.mark.parametrize("width", [0, 1, 7, 40, 1_000])
def test_setting_scores_are_each_columns_sum_over_parts_in_order_whatever_the_block_size(width: int):
    rng = np.random.default_rng(width)
    table = rng.exponential(size=(6, width)) * rng.choice([0.0, 1e-9, 1.0, 1e6], size=(6, width))
    ratios = np.array([[1.0] * 6, [4.65, 1, 1, 1, 1, 1], [1, 0.0, 15.5, 1, 1, 1], [1 / 3, 1, 1, 1, 0.0, 1], [1, 1, 1, 93.0, 1, 1e-300]])
    expected = np.zeros((len(ratios), width))
    for s in range(len(ratios)):
        for p in range(6):
            if ratios[s, p] != 0:
                expected[s] = expected[s] + table[p] * ratios[s, p]
    for chunk in (1, 3, 16, 16_384):
        got = B.setting_scores(table, ratios, chunk=chunk)
        assert got.shape == expected.shape and np.array_equal(got.view(np.int64), expected.view(np.int64))


def test_sorted_member_is_isin_for_sorted_keys():
    rng = np.random.default_rng(4)
    for _ in range(50):
        keys = np.unique(rng.integers(0, 200, size=rng.integers(0, 80)))
        wanted = rng.integers(-5, 210, size=rng.integers(0, 40))
        assert np.array_equal(_sorted_member(keys, wanted), np.isin(keys, wanted))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_memos_ranking_only_the_candidates_that_may_reach_a_top_k_equal_ranking_all(seed, monkeypatch):
    # A batch over the pruning size: many users and items, part values with ties.
    rng = np.random.default_rng(seed)
    settings = blend_settings(CONFIG)
    users = [f"u{r}" for r in range(40)]
    items = [f"i{c:03d}" for c in range(150)]
    vocab = Vocabulary(items)
    n = 9_000
    row = np.sort(rng.integers(0, len(users), n))
    code = rng.integers(0, len(items), n)
    part = rng.integers(0, 2, n)
    value = rng.integers(0, 8, n) / 4.0
    entries = PartEntries(row, code, part, value, vocab)
    profiles = [_profile([(items[r], 1, 1.0)], {items[r]: 1.0}) for r in range(len(users))]
    monkeypatch.setattr(B, "PRUNE_FROM", 10**9)
    everything = memos(users, profiles, entries, settings, settings[0], 100, k=5)
    monkeypatch.setattr(B, "PRUNE_FROM", 0)
    pruned = memos(users, profiles, entries, settings, settings[0], 100, k=5)
    assert pruned == everything
    assert len(everything) == len(users) and all(len(r) == 5 for m in everything.values() for r in m.ranked)
    # No positive score anywhere: the cut keeps nothing, and every user still gets an empty memo.
    flat = PartEntries(row, code, part, np.zeros(n), vocab)
    empty = memos(users, profiles, flat, settings, settings[0], 100, k=5)
    assert empty == {u: BlendMemo(100, settings_key(settings), (), ((),) * len(settings)) for u in users}
    monkeypatch.setattr(B, "PRUNE_FROM", 10**9)
    assert memos(users, profiles, flat, settings, settings[0], 100, k=5) == empty
