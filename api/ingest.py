"""Validation of the write endpoints' records, with the job's own rules.

Each record is checked by :func:`transforms.events.validate_record` or
:func:`transforms.catalog.validate_catalog_record` (the rules the job applies),
so what the API accepts the job accepts.  Two things are added at the door:
a missing ``ts`` is stamped with the server's receive time, and an event more
than the model's ``max_clock_skew_ms`` (default :data:`MAX_FUTURE_MS`) ahead of
the server clock is refused, because one far-future timestamp would move the
job's event-time watermark past every later event and make them all late.  The
same skew is how long after a forget the job drops the user's events, so a
forget wins over every event the API accepted before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import orjson

from transforms.catalog import CatalogItem, validate_catalog_record
from transforms.config import DEFAULT_MAX_CLOCK_SKEW_MS
from transforms.events import MAX_RECORD_BYTES, MAX_TS_MS, EventBatch, parse_records, validate_record

MAX_FUTURE_MS = DEFAULT_MAX_CLOCK_SKEW_MS
MAX_RECORDS_PER_REQUEST = 10_000


@dataclass(frozen=True)
class RecordRejection:
    """A refused record: its position in the request, the job's reason code and a sentence."""

    index: int
    reason: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "reason": self.reason, "detail": self.detail}


def _stamped(record: Any, now_ms: int) -> Any:
    """The record with ``ts = now_ms`` when it is an object without ``ts``; anything else unchanged."""
    if isinstance(record, dict) and "ts" not in record:
        return {**record, "ts": now_ms}
    return record


def validate_events(records: Sequence[Any], now_ms: int, max_future_ms: int = MAX_FUTURE_MS) -> tuple[EventBatch, list[RecordRejection]]:
    """Accepted events (in request order) and the rejections, each naming the record's index."""
    good: list[Any] = []
    good_index: list[int] = []
    rejections: list[RecordRejection] = []
    for index, record in enumerate(records):
        record = _stamped(record, now_ms)
        _, rejection = validate_record(record)
        if rejection is not None:
            rejections.append(RecordRejection(index, rejection.reason, rejection.detail))
            continue
        good.append(record)
        good_index.append(index)
    batch = parse_records(good).events
    future = batch.ts > now_ms + max_future_ms
    if future.any():
        for row in np.flatnonzero(future):
            rejections.append(RecordRejection(good_index[row], "timestamp_in_future", f"ts must be at most {max_future_ms // 1000} s ahead of the server clock"))
        rejections.sort(key=lambda r: r.index)
        batch = batch.take(~future)
    return batch, rejections


def validate_catalog(records: Sequence[Any], now_ms: int) -> tuple[list[CatalogItem], list[RecordRejection]]:
    """Accepted catalog items (in request order) and the rejections.

    Besides :func:`transforms.catalog.validate_catalog_record`, an item must
    have ``ts`` and ``created_at`` no later than 2100-01-01 (the event rule;
    larger values cannot even be serialised as 64-bit integers) and its JSON
    line must fit the job's per-record limit (:data:`MAX_RECORD_BYTES`), so the
    job's file source accepts every line the API writes.
    """
    items: list[CatalogItem] = []
    rejections: list[RecordRejection] = []
    for index, record in enumerate(records):
        item, rejection = validate_catalog_record(_stamped(record, now_ms))
        if rejection is not None:
            rejections.append(RecordRejection(index, rejection.reason, rejection.detail))
        elif item.ts > MAX_TS_MS or item.created_at > MAX_TS_MS:
            rejections.append(RecordRejection(index, "timestamp_out_of_range", "ts and created_at must be epoch ms before 2100-01-01"))
        elif len(item.to_json()) + 1 > MAX_RECORD_BYTES:
            rejections.append(RecordRejection(index, "too_large", f"the item is over {MAX_RECORD_BYTES} bytes as JSON"))
        else:
            items.append(item)
    return items, rejections


def forget_event_line(user_id: str, now_ms: int) -> bytes:
    """The JSON line that tells the job to drop a user's state (validated like any event)."""
    record = {"user_id": user_id, "event_type": "forget", "ts": int(now_ms)}
    _, rejection = validate_record(record)
    if rejection is not None:
        raise ValueError(f"cannot build a forget event for {user_id!r}: {rejection.detail}")
    return orjson.dumps(record) + b"\n"
