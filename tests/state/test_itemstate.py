"""The item model's columnar state: encodings, change log and compaction, restore, and migration of the row layout."""

from __future__ import annotations

import random

import numpy as np
import orjson
import pytest

from bench.itemmodel import CountingMap, CountingValue
from state.itemstate import MIN_LOG_BYTES, ItemModelStore, decode_item_state, encode_item_state
from state.schemas import SchemaError, encode_row
from transforms.config import ModelConfig
from transforms.cooccurrence import ItemModel, maps_from_state, state_from_maps

CONFIG = ModelConfig(row_capacity=8, neighbours=3)
ITEMS = [f"item-{k:02d}" for k in range(30)] + ["long-id-prefix-0000-x", "long-id-prefix-0000-a"]


def random_window(rng: random.Random):
    n = rng.randint(0, 12)
    items = [rng.choice(ITEMS) for _ in range(n)]
    pairs = [(rng.choice(ITEMS), rng.choice(ITEMS), float(rng.randint(1, 3))) for _ in range(rng.randint(0, 30))]
    return items, [float(rng.randint(1, 4)) for _ in items], [a for a, _, _ in pairs], [b for _, b, _ in pairs], [w for _, _, w in pairs]


def same_model(x: ItemModel, y: ItemModel) -> None:
    """Equal as id-keyed maps (codes may differ between models built differently)."""
    assert maps_from_state(x.to_state()) == maps_from_state(y.to_state())


def stores(stats=None):
    stats = stats if stats is not None else {"calls": 0, "bytes": 0}
    return CountingValue(stats), CountingMap(stats), CountingValue(stats)


def test_state_encoding_round_trips_exactly():
    rng = random.Random(3)
    model = ItemModel(CONFIG)
    for _ in range(20):
        model.apply_window(*random_window(rng))
    model.apply_window(["x"], [0.1 + 0.2], ["x"], ["item-01"], [1 / 3])  # floats that must round-trip bit for bit
    state = model.to_state()
    back = decode_item_state(encode_item_state(state))
    for name in ("count_codes", "counts", "row_items", "row_ptr", "row_codes", "row_weights", "dirty"):
        assert np.array_equal(getattr(back, name), getattr(state, name)), name
    assert back.ids == state.ids and back.base == 0


@pytest.mark.parametrize("seed", range(6))
def test_block_plus_log_restores_the_model(seed):
    rng = random.Random(seed)
    owns = lambda item: item < "item-15"  # noqa: E731 - about half the items
    block, log, meta_state = stores()
    store = ItemModelStore(CONFIG, block, log, meta_state)
    model, meta = store.load(owns)
    for step in range(40):
        for _ in range(rng.randint(0, 3)):  # a timer pass closes any number of windows
            model.apply_window(*random_window(rng))
        if rng.random() < 0.3:
            model.refresh()
        store.save(model, meta)
        restored, restored_meta = ItemModelStore(CONFIG, block, log, meta_state).load(owns)
        same_model(model, restored)
        assert restored_meta == meta
        assert {model.vocab.ids[c] for c in model.dirty} == {restored.vocab.ids[c] for c in restored.dirty}
        # Codes are stable across restore: the restored model goes on exactly as the original.
        assert restored.vocab.ids == model.vocab.ids


def test_compaction_bounds_the_log_and_keeps_the_model():
    rng = random.Random(11)
    block, log, meta_state = stores()
    store = ItemModelStore(CONFIG, block, log, meta_state)
    model, meta = store.load(lambda item: True)
    compactions = 0
    for _ in range(3000):
        model.apply_window(*random_window(rng))
        before = block.data
        store.save(model, meta)
        compactions += block.data is not before
        assert meta["log_bytes"] <= meta["block_bytes"] + MIN_LOG_BYTES
        assert meta["log_bytes"] == sum(len(v) for v in log.data.values())
    assert compactions >= 2 and len(log.data) < 3000
    same_model(model, store.load(lambda item: True)[0])


def test_a_pass_costs_two_state_writes():
    stats = {"calls": 0, "bytes": 0}
    block, log, meta_state = stores(stats)
    store = ItemModelStore(CONFIG, block, log, meta_state)
    model, meta = store.load(lambda item: True)
    rng = random.Random(5)
    for _ in range(50):
        model.apply_window(*random_window(rng))
    stats["calls"] = 0
    store.save(model, meta)
    assert stats["calls"] == 2  # one log entry (or block) and the meta, whatever the pass touched


def test_row_layout_is_migrated():
    rng = random.Random(8)
    reference = ItemModel(CONFIG)
    for _ in range(30):
        reference.apply_window(*random_window(rng))
    counts, rows, dirty = maps_from_state(reference.to_state())
    stats = {"calls": 0, "bytes": 0}
    old_rows, old_counts = CountingMap(stats), CountingMap(stats)
    for item, (others, weights) in rows.items():
        old_rows.put(item, encode_row(others, weights))
    for item, count in counts.items():
        old_counts.put(item, count)
    block, log, meta_state = stores(stats)
    meta_state.update(orjson.dumps({"v": 1, "slot": 4, "end": 1000, "dirty": dirty}))
    model, meta = ItemModelStore(CONFIG, block, log, meta_state, old_rows, old_counts).load(lambda item: True)
    same_model(model, reference)
    assert meta["v"] == 2 and meta["slot"] == 4 and meta["end"] == 1000
    assert not old_rows.data and not old_counts.data and block.data is not None
    again, _ = ItemModelStore(CONFIG, block, log, meta_state, old_rows, old_counts).load(lambda item: True)
    same_model(again, reference)
    assert {again.vocab.ids[c] for c in again.dirty} == set(dirty)


def test_unknown_versions_and_bad_columns_are_refused():
    block, log, meta_state = stores()
    meta_state.update(orjson.dumps({"v": 9}))
    with pytest.raises(SchemaError, match="meta version 9"):
        ItemModelStore(CONFIG, block, log, meta_state).load(lambda item: True)
    meta_state.update(orjson.dumps({"v": 1, "slot": None, "end": 0, "dirty": []}))
    with pytest.raises(SchemaError, match="row layout"):
        ItemModelStore(CONFIG, block, log, meta_state).load(lambda item: True)
    good = orjson.loads(encode_item_state(state_from_maps({"a": 1.0, "b": 2.0}, {"a": (["b"], [1.0])}, ["a"])))
    with pytest.raises(SchemaError, match="version"):
        decode_item_state(orjson.dumps({**good, "v": 2}))
    with pytest.raises(SchemaError, match="outside the vocabulary"):
        decode_item_state(orjson.dumps({**good, "rc": [7]}))
    with pytest.raises(SchemaError, match="not JSON"):
        decode_item_state(b"\x00")


def test_clear_drops_block_log_and_meta():
    """The online vectors' evidence restarts at an embedding switch: after clear() a load is an empty model."""
    rng = random.Random(5)
    block, log, meta = stores()
    store = ItemModelStore(CONFIG, block, log, meta)
    model, state_meta = store.load(owns=lambda item: True)
    for _ in range(30):
        model.apply_window(*random_window(rng))
        store.save(model, state_meta)
    assert maps_from_state(store.load(owns=lambda item: True)[0].to_state())[1]  # rows were saved
    store.clear()
    empty, fresh_meta = store.load(owns=lambda item: True)
    assert len(empty.vocab) == 0 and fresh_meta["seq"] == 0 and fresh_meta["block_bytes"] == 0
    # What follows a clear is logged and restored as usual.
    empty.apply_window(["a"], [1.0], ["a"], ["b"], [2.0])
    store.save(empty, fresh_meta)
    same_model(store.load(owns=lambda item: True)[0], empty)
