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

import orjson

from transforms.catalog import CatalogItem, validate_catalog_record
from transforms.config import DEFAULT_MAX_CLOCK_SKEW_MS
from transforms.events import COLUMNS, MAX_RECORD_BYTES, MAX_TS_MS, EventBatch, parse_records, validate_record

MAX_FUTURE_MS = DEFAULT_MAX_CLOCK_SKEW_MS
MAX_RECORDS_PER_REQUEST = 10_000
# Where a row from validate_record holds the event time.
_TS_COLUMN = COLUMNS.index("ts")


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


@dataclass(frozen=True)
class CheckedEvents:
    """The outcome of checking a request's events.

    ``batch`` holds the accepted records' rows in request order: one row per
    record, except an impression, which is one row per shown item
    (:func:`transforms.events.validate_record`).  So ``accepted`` counts
    records, as the client sent them, not rows.
    """

    batch: EventBatch
    accepted: int
    rejections: list[RecordRejection]


def validate_events(records: Sequence[Any], now_ms: int, max_future_ms: int = MAX_FUTURE_MS) -> CheckedEvents:
    """Accepted events and the rejections, each naming the record's index in ``records``."""
    latest = now_ms + max_future_ms
    good: list[Any] = []
    rejections: list[RecordRejection] = []
    for index, record in enumerate(records):
        record = _stamped(record, now_ms)
        rows, rejection = validate_record(record)
        if rejection is not None:
            rejections.append(RecordRejection(index, rejection.reason, rejection.detail))
        elif rows[0][_TS_COLUMN] > latest:  # the rows of one record share its ts
            rejections.append(RecordRejection(index, "timestamp_in_future", f"ts must be at most {max_future_ms // 1000} s ahead of the server clock"))
        else:
            good.append(record)
    return CheckedEvents(parse_records(good).events, len(good), rejections)


def spool_lines(batch: EventBatch, rows_per_line: int = MAX_RECORDS_PER_REQUEST) -> list[bytes]:
    """The batch as JSON-array lines for one spool file, each of at most ``rows_per_line`` rows.

    The job reads each line as one record group, up to
    :data:`transforms.events.MAX_BATCH_LINE_BYTES`.  A request of at most
    :data:`MAX_RECORDS_PER_REQUEST` plain events is one line as before; the
    rows of impressions (up to 100 per record) are split so no line outgrows
    what 10,000 plain events can make.
    """
    records = batch.to_records()
    return [orjson.dumps(records[start : start + rows_per_line]) + b"\n" for start in range(0, len(records), rows_per_line)]


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
