"""Training data: interests as the job holds them, the history rule, side features, the item vocabulary."""

from __future__ import annotations

import numpy as np

from learn.data import PAD, build_item_features, item_vocabulary, prepare
from transforms.catalog import CatalogItem
from transforms.config import ModelConfig, event_weights
from transforms.events import batch_from_columns
from transforms.profile import ItemContribution, apply_user_events, top_interests

from .conftest import START_MS, planted_catalog

HOUR = 3600_000


def test_interests_are_the_profiles_decayed_to_the_last_event():
    config = ModelConfig()
    events = batch_from_columns(
        user=["a"] * 5 + ["b"],
        item=["x", "y", "x", "z", "y", "x"],
        event_type=["view", "purchase", "click", "view", "remove_from_cart", "view"],
        ts=[START_MS, START_MS + HOUR, START_MS + 30 * HOUR, START_MS + 31 * HOUR, START_MS + 32 * HOUR, START_MS],
    )
    data = prepare(events, [], config, sequence_length=4)
    ordered = events.sorted_by_time()
    mine = ordered.user == "a"
    profile = apply_user_events(
        None, ordered.item[mine].tolist(), ordered.etype[mine].tolist(), ordered.ts[mine].tolist(),
        event_weights(ordered.etype[mine], ordered.rating[mine], config).tolist(), config, ItemContribution(),
    )
    expected = dict(top_interests(profile, profile.last_ts, config, limit=100))
    k = data.interests.users.tolist().index("a")
    rows, weights = data.interests.of(k)
    got = dict(zip(data.item_ids[rows].tolist(), weights.tolist()))
    assert got.keys() == expected.keys() == {"x", "y", "z"}  # y: 6 - 2 decayed stays positive
    for item in got:
        assert np.isclose(got[item], expected[item], rtol=1e-12)
    assert data.has_id.tolist() == [True, True, True]


def test_sequence_examples_follow_the_history_rule():
    events = batch_from_columns(
        user=["a"] * 6,
        item=["p", "q", "q", "r", "p", "s"],
        event_type=["view", "view", "click", "view", "remove_from_cart", "view"],
        ts=[START_MS + k * 1000 for k in range(6)],
    )
    data = prepare(events, [], ModelConfig(), sequence_length=2)
    rows = data.rows_of()
    # q after [p]; r after [p, q]; the repeat of q and the negative event on p form none; s after [q, r] (window 2).
    assert data.examples.targets.tolist() == [rows["q"], rows["r"], rows["s"]]
    assert data.examples.inputs.tolist() == [[PAD, rows["p"]], [rows["p"], rows["q"]], [rows["q"], rows["r"]]]
    assert data.recent["a"].tolist() == [rows["r"], rows["s"]]


def test_catalog_only_items_get_rows_and_features_but_no_id():
    catalog = planted_catalog()
    events = batch_from_columns(user=["a", "a"], item=["i001", "i002"], event_type=["view", "view"], ts=[START_MS, START_MS + 1])
    ids = item_vocabulary(events, catalog)
    assert len(ids) == len(catalog) and ids.tolist() == sorted(ids.tolist())
    data = prepare(events, catalog, ModelConfig(), sequence_length=3, item_ids=ids)
    assert int(data.has_id.sum()) == 2
    new = data.rows_of()["n0"]
    assert {"cat:top0", "cat:top0/sub0", "brand:brand0", "lamp"} <= set(data.features.of(new))
    assert any(name.startswith("price:top0:") for name in data.features.of(new))


def test_rare_tokens_are_dropped_and_price_buckets_split_within_a_category():
    catalog = planted_catalog(extra_new_items=False)
    ids = np.array([c.item_id for c in catalog], dtype=object)
    features = build_item_features(ids, catalog, min_items=2, buckets=3)
    assert "0" not in features.names  # the "Model <k>" numbers occur once each
    priced = [CatalogItem(item_id=f"p{k}", category="shop", price=float(2**k)) for k in range(9)]
    features = build_item_features(np.array([c.item_id for c in priced], dtype=object), priced, min_items=1, buckets=3)
    assert [features.of(k) for k in range(9)] == [["cat:shop", f"price:shop:{k // 3}"] for k in range(9)]
