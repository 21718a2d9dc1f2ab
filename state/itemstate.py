"""The item model's managed state: one columnar block plus a log of changes, compacted when the log outgrows it.

Layout (per item shard; the shard is the Flink key)
---------------------------------------------------
==============  ===============  ============================================================
state           kind             value
==============  ===============  ============================================================
``items-block`` ValueState       the whole model as columns (:func:`encode_item_state`,
                                 an :class:`transforms.cooccurrence.ItemModelState` with base 0)
``items-log``   MapState         ``"%020d" % seq`` -> the changes of one timer pass
                                 (:func:`encode_item_state` of ``ItemModel.changes()``)
``meta``        ValueState       JSON ``{"v": 2, "slot", "end", "seq", "log_bytes", "block_bytes"}``
==============  ===============  ============================================================

A timer pass (which closes every window up to the watermark) costs two state
writes whatever the number of windows and items it touched: its changes as
one log entry, and the meta.  When the log's bytes exceed the block's (plus
:data:`MIN_LOG_BYTES`), the block is rewritten from the in-memory model and
the log cleared, so writes stay within about twice the changes and a restore
reads one block and a bounded log.  Restore: decode the block, apply the log
entries in order (:meth:`ItemModel.apply_state`); codes are stable, so the
result is the model that wrote them.

Encodings are orjson JSON with ``"v"`` first, like :mod:`state.schemas`
(arrays serialised natively; floats round-trip exactly).

The row layout before this one (meta ``v`` 1: MapStates ``rows`` item ->
:func:`state.schemas.encode_row`, ``counts`` item -> weight, and the dirty
items in the meta) is migrated on first use: read, turned into a block, and
cleared.  A bootstrap (:func:`pipelines.bootstrap.load_item_state`) writes
that layout and is migrated the same way.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
import orjson

from state.schemas import SchemaError, decode_row
from transforms.config import ModelConfig
from transforms.cooccurrence import ItemModel, ItemModelState, state_from_maps

log = logging.getLogger(__name__)

ITEM_STATE_VERSION = 1
META_VERSION = 2
# The log may grow to the block's size plus this before it is compacted into the block.
MIN_LOG_BYTES = 256 * 1024


def encode_item_state(state: ItemModelState) -> bytes:
    """An item model state (full or changes) as versioned JSON with numeric columns."""
    return orjson.dumps(
        {
            "v": ITEM_STATE_VERSION,
            "b": state.base,
            "i": state.ids,
            "cc": state.count_codes,
            "n": state.counts,
            "ri": state.row_items,
            "rp": state.row_ptr,
            "rc": state.row_codes,
            "rw": state.row_weights,
            "d": state.dirty,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def decode_item_state(raw: bytes) -> ItemModelState:
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"item model state is not JSON: {exc}") from exc
    if not isinstance(d, dict) or d.get("v") != ITEM_STATE_VERSION:
        raise SchemaError(f"unsupported item model state version {d.get('v') if isinstance(d, dict) else '?'}")
    try:
        state = ItemModelState(
            base=int(d["b"]),
            ids=[str(i) for i in d["i"]],
            count_codes=np.asarray(d["cc"], dtype=np.int64),
            counts=np.asarray(d["n"], dtype=np.float64),
            row_items=np.asarray(d["ri"], dtype=np.int64),
            row_ptr=np.asarray(d["rp"], dtype=np.int64),
            row_codes=np.asarray(d["rc"], dtype=np.int64),
            row_weights=np.asarray(d["rw"], dtype=np.float64),
            dirty=np.asarray(d["d"], dtype=np.int64),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"malformed item model state: {type(exc).__name__}: {exc}") from exc
    size = state.vocabulary_size
    if (
        len(state.count_codes) != len(state.counts)
        or len(state.row_ptr) != len(state.row_items) + 1
        or state.row_ptr[0] != 0
        or state.row_ptr[-1] != len(state.row_codes)
        or len(state.row_codes) != len(state.row_weights)
        or np.any(np.diff(state.row_ptr) < 0)
        or any(len(a) and (a.min() < 0 or a.max() >= size) for a in (state.count_codes, state.row_items, state.row_codes, state.dirty))
    ):
        raise SchemaError("malformed item model state: columns disagree in length or point outside the vocabulary")
    return state


class ItemModelStore:
    """One item shard's model in managed state (see the module doc); the operator keeps the model in memory."""

    def __init__(self, config: ModelConfig, block, log_state, meta, old_rows=None, old_counts=None) -> None:
        self.config = config
        self.block = block
        self.log = log_state
        self.meta_state = meta
        self.old_rows = old_rows
        self.old_counts = old_counts

    def meta(self) -> dict[str, Any]:
        raw = self.meta_state.value()
        if not raw:
            return {"v": META_VERSION, "slot": None, "end": 0, "seq": 0, "log_bytes": 0, "block_bytes": 0}
        meta = orjson.loads(raw)
        if meta.get("v") not in (1, META_VERSION):
            raise SchemaError(f"unsupported item model meta version {meta.get('v')!r}; this release reads versions 1 and {META_VERSION}")
        return meta

    def load(self, owns: Callable[[str], bool]) -> tuple[ItemModel, dict[str, Any]]:
        """The model and meta from state: the block plus the log in order (migrating the row layout)."""
        meta = self.meta()
        if meta["v"] == 1:
            return self._migrate(meta, owns)
        raw = self.block.value()
        model = ItemModel(self.config, owns=owns) if raw is None else ItemModel.from_state(self.config, decode_item_state(raw), owns)
        entries = sorted(self.log.items())
        for _, entry in entries:
            model.apply_state(decode_item_state(entry))
        return model, meta

    def _migrate(self, meta: dict[str, Any], owns: Callable[[str], bool]) -> tuple[ItemModel, dict[str, Any]]:
        """Row layout (meta v1) -> block: rows and counts read once, written as a block, then cleared."""
        if self.old_rows is None or self.old_counts is None:
            raise SchemaError("item model state is in the row layout (meta v1) and this operator cannot read it; restore it with a release that migrates it")
        counts = dict(self.old_counts.items())
        rows = {item: decode_row(raw) for item, raw in self.old_rows.items()}
        model = ItemModel.from_state(self.config, state_from_maps(counts, rows, meta.get("dirty", [])), owns)
        meta = {"v": META_VERSION, "slot": meta["slot"], "end": meta["end"], "seq": 0, "log_bytes": 0, "block_bytes": 0}
        self._compact(model, meta)
        self.old_rows.clear()
        self.old_counts.clear()
        self.meta_state.update(orjson.dumps(meta))
        log.info("item model: migrated %d rows and %d counts from the row layout to a columnar block", len(rows), len(counts))
        return model, meta

    def clear(self) -> None:
        """Drop the whole model: block, log and meta (the next :meth:`load` gives an empty model)."""
        self.block.clear()
        self.log.clear()
        self.meta_state.clear()

    def save(self, model: ItemModel, meta: dict[str, Any]) -> None:
        """After a timer pass: its changes as one log entry (or a new block when the log outgrows it), and the meta."""
        if model.has_changes():
            raw = encode_item_state(model.changes())
            if meta["log_bytes"] + len(raw) > meta["block_bytes"] + MIN_LOG_BYTES:
                self._compact(model, meta)
            else:
                meta["seq"] += 1
                self.log.put(f"{meta['seq']:020d}", raw)
                meta["log_bytes"] += len(raw)
        self.meta_state.update(orjson.dumps(meta))

    def _compact(self, model: ItemModel, meta: dict[str, Any]) -> None:
        raw = encode_item_state(model.to_state())
        model.changes()  # the block holds everything: nothing is owed to the log
        self.block.update(raw)
        self.log.clear()
        meta["log_bytes"] = 0
        meta["block_bytes"] = len(raw)
