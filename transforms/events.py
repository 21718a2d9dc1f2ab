"""The event model: one shopper action, validated, in columnar (numpy) form.

An event is ``user_id, item_id, event_type, ts`` plus optional ``session_id``,
``quantity``, ``price``, ``rating`` and ``query``.  Parsing never raises for bad
input: every record either becomes a row of an :class:`EventBatch` or a
:class:`Rejection` carrying the raw record and a machine-readable reason, so
callers can dead-letter it and count it.

Batches are columnar so that every later step (interest decay, co-occurrence,
trending) is a vectorised numpy operation over a micro-batch, not a Python loop
per event.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import orjson

# Codes are part of the state encoding: append only, never reorder.
EVENT_TYPES: tuple[str, ...] = (
    "view",
    "click",
    "add_to_cart",
    "remove_from_cart",
    "favorite",
    "purchase",
    "rating",
    "forget",
    # What a frontend showed: one row per shown item, with the list's rec_id and
    # the item's position.  Not an interaction: no engine learns from it; the
    # job's attribution counts it (see split_feedback).
    "impression",
)
EVENT_CODE: dict[str, int] = {name: code for code, name in enumerate(EVENT_TYPES)}
VIEW, CLICK, ADD_TO_CART, REMOVE_FROM_CART, FAVORITE, PURCHASE, RATING, FORGET, IMPRESSION = range(len(EVENT_TYPES))
# Outcomes an impression can lead to (attributed to the list that showed the item).
OUTCOME_TYPES: tuple[int, ...] = (CLICK, ADD_TO_CART, PURCHASE)

# Limits applied before an id can reach a Redis key or a state entry.
MAX_ID_LENGTH = 128
ID_PATTERN = re.compile(r"[A-Za-z0-9_.:@\-]{1,128}")
_INTEGER = re.compile(r"-?[0-9]{1,19}")
MAX_QUERY_LENGTH = 512
# A rec_id as the API issues it (see transforms.recid): checked here for shape
# only; whether it was issued for this user is the attribution's check.
MAX_REC_ID_LENGTH = 200
REC_ID_PATTERN = re.compile(r"[A-Za-z0-9_.~\-]{1,200}")
MAX_POSITION = 999
MAX_IMPRESSION_ITEMS = 100
MAX_QUANTITY = 10_000
# Event time must be a plausible epoch-milliseconds value: after 1990-01-01 and
# no further in the future than `max_future_ms` from the batch's reference time.
MIN_TS_MS = 631_152_000_000
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01; the far-future guard.
MAX_RECORD_BYTES = 16_384
# A line holding a JSON array of events (a producer's batch) may be this large.
MAX_BATCH_LINE_BYTES = 16 * 1024 * 1024


def valid_id(value: object) -> bool:
    """True when ``value`` is a string usable as a user or item id (length and charset bounded)."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


@dataclass(frozen=True)
class Rejection:
    """A record that could not become an event, kept whole for the dead-letter output."""

    reason: str
    detail: str
    raw: str

    def to_json(self) -> bytes:
        return orjson.dumps({"reason": self.reason, "detail": self.detail, "raw": self.raw})


@dataclass(frozen=True)
class EventBatch:
    """Validated events as parallel columns; row ``i`` of every column is one event.

    ``ts`` is event time in epoch milliseconds; ``weight`` columns are not stored
    here because weights are configuration (see :func:`transforms.config.event_weights`).
    Missing optional numeric fields are NaN, missing strings are ``""``.
    """

    user: np.ndarray  # object[str]
    item: np.ndarray  # object[str]
    etype: np.ndarray  # int8, codes of EVENT_TYPES
    ts: np.ndarray  # int64, epoch ms
    session: np.ndarray = field(default=None)  # object[str]
    quantity: np.ndarray = field(default=None)  # float64, NaN when absent
    price: np.ndarray = field(default=None)  # float64, NaN when absent
    rating: np.ndarray = field(default=None)  # float64, NaN when absent
    query: np.ndarray = field(default=None)  # object[str]
    rec_id: np.ndarray = field(default=None)  # object[str], "" when absent
    position: np.ndarray = field(default=None)  # int16, -1 when absent

    def __post_init__(self) -> None:
        n = len(self.user)
        defaults = {
            "session": lambda: np.full(n, "", dtype=object),
            "quantity": lambda: np.full(n, np.nan),
            "price": lambda: np.full(n, np.nan),
            "rating": lambda: np.full(n, np.nan),
            "query": lambda: np.full(n, "", dtype=object),
            "rec_id": lambda: np.full(n, "", dtype=object),
            "position": lambda: np.full(n, -1, dtype=np.int16),
        }
        for name, make in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, make())
        for name in COLUMNS:
            if len(getattr(self, name)) != n:
                raise ValueError(f"column {name} has {len(getattr(self, name))} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.user)

    def take(self, index: np.ndarray | slice) -> "EventBatch":
        """Rows selected by a boolean mask, integer index or slice."""
        return EventBatch(**{name: getattr(self, name)[index] for name in COLUMNS})

    def sorted_by_time(self) -> "EventBatch":
        """Rows in event-time order; ties keep their arrival order (stable sort)."""
        return self.take(np.argsort(self.ts, kind="stable"))

    @staticmethod
    def empty() -> "EventBatch":
        return EventBatch(
            user=np.empty(0, dtype=object),
            item=np.empty(0, dtype=object),
            etype=np.empty(0, dtype=np.int8),
            ts=np.empty(0, dtype=np.int64),
        )

    @staticmethod
    def concat(batches: Sequence["EventBatch"]) -> "EventBatch":
        batches = [b for b in batches if len(b)]
        if not batches:
            return EventBatch.empty()
        if len(batches) == 1:
            return batches[0]
        return EventBatch(**{name: np.concatenate([getattr(b, name) for b in batches]) for name in COLUMNS})

    def to_records(self) -> list[dict[str, Any]]:
        """Events as JSON-ready dicts (optional fields only when present)."""
        out = []
        for i in range(len(self)):
            rec: dict[str, Any] = {
                "user_id": self.user[i],
                "item_id": self.item[i],
                "event_type": EVENT_TYPES[int(self.etype[i])],
                "ts": int(self.ts[i]),
            }
            if self.session[i]:
                rec["session_id"] = self.session[i]
            for name in ("quantity", "price", "rating"):
                value = float(getattr(self, name)[i])
                if not math.isnan(value):
                    rec[name] = int(value) if name == "quantity" else value
            if self.query[i]:
                rec["query"] = self.query[i]
            if self.rec_id[i]:
                rec["rec_id"] = self.rec_id[i]
            if self.position[i] >= 0:
                rec["position"] = int(self.position[i])
            out.append(rec)
        return out

    def to_jsonl(self) -> bytes:
        return b"".join(orjson.dumps(r) + b"\n" for r in self.to_records())


COLUMNS: tuple[str, ...] = ("user", "item", "etype", "ts", "session", "quantity", "price", "rating", "query", "rec_id", "position")


def split_feedback(batch: EventBatch) -> tuple[EventBatch, EventBatch]:
    """``(interactions, feedback)`` of a batch: the one place impressions leave the learning path.

    Interactions are every row but impressions (what profiles, co-occurrence
    and trending learn from).  Feedback is what attribution needs: impressions,
    the outcomes they can lead to (clicks, carts, purchases) and forgets (which
    also clear a user's impressions).
    """
    is_impression = batch.etype == IMPRESSION
    interactions = batch.take(~is_impression) if is_impression.any() else batch
    wanted = is_impression | np.isin(batch.etype, OUTCOME_TYPES + (FORGET,))
    return interactions, batch.take(wanted)


@dataclass(frozen=True)
class ParseResult:
    """Outcome of parsing a group of records: the good ones as a batch, the bad ones kept whole."""

    events: EventBatch
    rejections: list[Rejection]


def _reject(reason: str, detail: str, raw: Any) -> Rejection:
    if isinstance(raw, bytes):
        text = raw.decode("utf-8", errors="backslashreplace")
    elif isinstance(raw, str):
        text = raw
    else:
        try:
            text = orjson.dumps(raw, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:
            text = repr(raw)
    return Rejection(reason=reason, detail=detail, raw=text[:MAX_RECORD_BYTES])


def _as_int_ts(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    return None


def _optional_number(rec: Mapping[str, Any], name: str) -> tuple[float, str | None]:
    value = rec.get(name)
    if value is None or value == "":
        return math.nan, None
    if isinstance(value, bool):
        return math.nan, f"{name} must be a number"
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return math.nan, f"{name} must be a number"
    if not isinstance(value, (int, float)):
        return math.nan, f"{name} must be a finite number"
    try:
        number = float(value)
    except OverflowError:
        return math.nan, f"{name} must be a finite number"
    if not math.isfinite(number):
        return math.nan, f"{name} must be a finite number"
    return number, None


def validate_record(rec: Any, raw: Any = None) -> tuple[list[tuple] | None, Rejection | None]:
    """Check one decoded record; return its rows (column values) or a rejection.

    Rules (each failure names its reason): the record is an object; ``user_id``
    and ``item_id`` are ids of at most 128 characters from ``[A-Za-z0-9_.:@-]``;
    ``event_type`` is one of :data:`EVENT_TYPES`; ``ts`` is integral epoch
    milliseconds between 1990-01-01 and 2100-01-01; ``quantity`` is 1..10,000;
    ``price`` is >= 0; ``rating`` is required for and only meaningful with
    ``rating`` events; ``query`` is at most 512 characters; ``rec_id`` (the
    list an event came from) has the API's shape and ``position`` is 0..999.

    Every record is one row except an ``impression``, which is one row per
    shown item: ``{"event_type": "impression", "rec_id": R, "items": [...],
    "positions": [...]}`` (positions default to 0, 1, ...; a single
    ``item_id`` with ``position`` is an impression of one item).
    """
    raw = rec if raw is None else raw
    if not isinstance(rec, Mapping):
        return None, _reject("not_an_object", "an event must be a JSON object", raw)
    user, item = rec.get("user_id"), rec.get("item_id")
    if isinstance(user, int) and not isinstance(user, bool):
        user = str(user)
    if isinstance(item, int) and not isinstance(item, bool):
        item = str(item)
    if user is None:
        return None, _reject("missing_field", "user_id is required", raw)
    if not valid_id(user):
        return None, _reject("bad_id", "user_id must be 1-128 chars of [A-Za-z0-9_.:@-]", raw)
    etype_name = rec.get("event_type")
    if etype_name is None:
        return None, _reject("missing_field", "event_type is required", raw)
    code = EVENT_CODE.get(etype_name) if isinstance(etype_name, str) else None
    if code is None:
        return None, _reject("unknown_event_type", f"event_type must be one of {', '.join(EVENT_TYPES)}", raw)
    if code == FORGET:
        # A forget event needs no item: it clears the user's state.
        item = item if valid_id(item) else ""
    elif code == IMPRESSION and "items" in rec:
        item = ""  # the shown items are checked below
    elif item is None:
        return None, _reject("missing_field", "item_id is required", raw)
    elif not valid_id(item):
        return None, _reject("bad_id", "item_id must be 1-128 chars of [A-Za-z0-9_.:@-]", raw)
    if "ts" not in rec:
        return None, _reject("missing_field", "ts (epoch milliseconds) is required", raw)
    ts = _as_int_ts(rec.get("ts"))
    if ts is None:
        return None, _reject("bad_timestamp", "ts must be an integer number of epoch milliseconds", raw)
    if ts < MIN_TS_MS or ts > MAX_TS_MS:
        return None, _reject("timestamp_out_of_range", "ts must be epoch ms between 1990-01-01 and 2100-01-01", raw)
    numbers = {}
    for name in ("quantity", "price", "rating"):
        value, problem = _optional_number(rec, name)
        if problem:
            return None, _reject("bad_field", problem, raw)
        numbers[name] = value
    if not math.isnan(numbers["quantity"]) and not (1 <= numbers["quantity"] <= MAX_QUANTITY):
        return None, _reject("bad_field", f"quantity must be between 1 and {MAX_QUANTITY}", raw)
    if not math.isnan(numbers["price"]) and numbers["price"] < 0:
        return None, _reject("bad_field", "price must be >= 0", raw)
    if code == RATING and math.isnan(numbers["rating"]):
        return None, _reject("missing_field", "rating events need a numeric rating", raw)
    session = rec.get("session_id") or ""
    if isinstance(session, int) and not isinstance(session, bool):
        session = str(session)
    if session != "" and not valid_id(session):
        return None, _reject("bad_id", "session_id must be 1-128 chars of [A-Za-z0-9_.:@-]", raw)
    query = rec.get("query") or ""
    if not isinstance(query, str) or len(query) > MAX_QUERY_LENGTH:
        return None, _reject("bad_field", f"query must be a string of at most {MAX_QUERY_LENGTH} chars", raw)
    rec_id = rec.get("rec_id") or ""
    if rec_id != "" and not (isinstance(rec_id, str) and REC_ID_PATTERN.fullmatch(rec_id)):
        return None, _reject("bad_rec_id", f"rec_id must be the id the API returned with the list (1-{MAX_REC_ID_LENGTH} chars of [A-Za-z0-9_.~-])", raw)
    if code == IMPRESSION and not rec_id:
        return None, _reject("missing_field", "impression events need the rec_id of the list that was shown", raw)
    shown, problem = _shown_items(rec, code, item)
    if problem:
        return None, _reject(*problem, raw)
    common = (user, "", code, ts, str(session), numbers["quantity"], numbers["price"], numbers["rating"], query, rec_id, -1)
    return [common[:1] + (shown_item,) + common[2:10] + (position,) for shown_item, position in shown], None


def _shown_items(rec: Mapping[str, Any], code: int, item: str) -> tuple[list[tuple[str, int]], tuple[str, str] | None]:
    """``[(item, position)]`` a record stands for (one row per shown item of an impression), or a problem."""
    items = rec.get("items") if code == IMPRESSION and "items" in rec else [item]
    if code != IMPRESSION and "items" in rec:
        return [], ("bad_field", "only impression events carry items (use item_id)")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_IMPRESSION_ITEMS:
        return [], ("bad_field", f"items must be a list of 1-{MAX_IMPRESSION_ITEMS} item ids")
    items = [str(i) if isinstance(i, int) and not isinstance(i, bool) else i for i in items]
    if code == IMPRESSION and not all(valid_id(i) for i in items):
        return [], ("bad_id", "every shown item must be an id of 1-128 chars of [A-Za-z0-9_.:@-]")
    if len(set(items)) != len(items):
        return [], ("bad_field", "an impression shows each item once")
    given = rec.get("positions") if "items" in rec else ([rec["position"]] if rec.get("position") is not None else None)
    if given is None:
        if code == IMPRESSION and "items" not in rec:
            return [], ("missing_field", "a one-item impression needs the item's position")
        positions = list(range(len(items))) if code == IMPRESSION else [-1]
    elif not isinstance(given, list) or len(given) != len(items):
        return [], ("bad_field", "positions must be a list as long as items")
    elif not all(isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= MAX_POSITION for p in given):
        return [], ("bad_field", f"positions must be integers 0-{MAX_POSITION}")
    else:
        positions = given
    return list(zip(items, positions)), None


def _build(rows: list[tuple]) -> EventBatch:
    if not rows:
        return EventBatch.empty()
    user, item, code, ts, session, quantity, price, rating, query, rec_id, position = zip(*rows)
    return EventBatch(
        user=np.array(user, dtype=object),
        item=np.array(item, dtype=object),
        etype=np.array(code, dtype=np.int8),
        ts=np.array(ts, dtype=np.int64),
        session=np.array(session, dtype=object),
        quantity=np.array(quantity, dtype=np.float64),
        price=np.array(price, dtype=np.float64),
        rating=np.array(rating, dtype=np.float64),
        query=np.array(query, dtype=object),
        rec_id=np.array(rec_id, dtype=object),
        position=np.array(position, dtype=np.int16),
    )


def parse_records(records: Iterable[Any]) -> ParseResult:
    """Validate already-decoded records (dicts) into a batch plus rejections."""
    rows, rejections = [], []
    for rec in records:
        row, rejection = validate_record(rec)
        if rejection is None:
            rows.extend(row)
        else:
            rejections.append(rejection)
    return ParseResult(_build(rows), rejections)


def parse_json_lines(lines: Iterable[bytes | str]) -> ParseResult:
    """Parse JSON lines (bytes or str; each one event, or a JSON array of events); blank lines are skipped.

    Non-UTF-8 bytes, invalid JSON, oversized records and schema violations each
    become a :class:`Rejection`; the rest of the group is unaffected.
    """
    rows, rejections = [], []
    for line in lines:
        if isinstance(line, str):
            if not line.strip():
                continue
            # Lone surrogates stay undecodable, so they are reported as not UTF-8.
            data = line.encode("utf-8", errors="surrogatepass")
        else:
            if not line.strip():
                continue
            data = line
        is_array = data.lstrip()[:1] == b"["
        limit = MAX_BATCH_LINE_BYTES if is_array else MAX_RECORD_BYTES
        if len(data) > limit:
            rejections.append(_reject("too_large", f"line is over {limit} bytes", data))
            continue
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            rejections.append(_reject("not_utf8", "record is not valid UTF-8", data))
            continue
        try:
            rec = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            rejections.append(_reject("bad_json", str(exc)[:200], data))
            continue
        # A line may carry a JSON array of events: producers batch that way.
        for one, raw in ((r, orjson.dumps(r)) for r in rec) if isinstance(rec, list) else ((rec, data),):
            if len(raw) > MAX_RECORD_BYTES:
                rejections.append(_reject("too_large", f"record is over {MAX_RECORD_BYTES} bytes", raw))
                continue
            row, rejection = validate_record(one, raw=raw)
            if rejection is None:
                rows.extend(row)
            else:
                rejections.append(rejection)
    return ParseResult(_build(rows), rejections)


def parse_csv(text: str) -> ParseResult:
    """Parse CSV text with a header naming the event fields (``user_id,item_id,event_type,ts,...``)."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        return ParseResult(EventBatch.empty(), [])
    rows, rejections = [], []
    while True:
        try:
            rec = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. a field over the csv module's size limit
            rejections.append(_reject("bad_csv", str(exc)[:200], f"line {reader.line_num}"))
            continue
        if None in rec:  # more cells than header names
            rejections.append(_reject("bad_csv", "row has more cells than the header", ",".join(map(str, rec.values()))))
            continue
        clean = {k: v for k, v in rec.items() if v not in (None, "")}
        row, rejection = validate_record(clean, raw=",".join("" if v is None else str(v) for v in rec.values()))
        if rejection is None:
            rows.extend(row)
        else:
            rejections.append(rejection)
    return ParseResult(_build(rows), rejections)


def parse_arrow(table: Any) -> ParseResult:
    """Parse a ``pyarrow.Table``/``RecordBatch`` with the event columns.

    Columns are converted in bulk; each row then goes through the same
    :func:`validate_record` as JSON lines so all formats share one rule set.
    """
    columns = {name: table.column(name).to_pylist() for name in table.schema.names}
    n = table.num_rows
    records = [{name: columns[name][i] for name in columns} for i in range(n)]
    return parse_records(records)


def batch_from_columns(
    user: Sequence[str],
    item: Sequence[str],
    event_type: Sequence[str] | np.ndarray,
    ts: Sequence[int] | np.ndarray,
    **optional: Sequence,
) -> EventBatch:
    """Build a batch from trusted columns (loaders, generator); event types by name or code."""
    etype = np.asarray(event_type)
    if etype.dtype.kind in "US" or etype.dtype == object:
        etype = np.array([EVENT_CODE[e] for e in etype], dtype=np.int8)
    return EventBatch(
        user=np.asarray(user, dtype=object),
        item=np.asarray(item, dtype=object),
        etype=etype.astype(np.int8),
        ts=np.asarray(ts, dtype=np.int64),
        session=np.asarray(optional["session"], dtype=object) if "session" in optional else None,
        quantity=np.asarray(optional["quantity"], dtype=np.float64) if "quantity" in optional else None,
        price=np.asarray(optional["price"], dtype=np.float64) if "price" in optional else None,
        rating=np.asarray(optional["rating"], dtype=np.float64) if "rating" in optional else None,
        query=np.asarray(optional["query"], dtype=object) if "query" in optional else None,
        rec_id=np.asarray(optional["rec_id"], dtype=object) if "rec_id" in optional else None,
        position=np.asarray(optional["position"], dtype=np.int16) if "position" in optional else None,
    )
