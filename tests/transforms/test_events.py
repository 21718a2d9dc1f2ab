"""The event model: parsing of every input format, each rejection reason, batch helpers, fuzzing."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from transforms.events import (
    ADD_TO_CART,
    EVENT_CODE,
    EVENT_TYPES,
    FORGET,
    IMPRESSION,
    MAX_BATCH_LINE_BYTES,
    MAX_RECORD_BYTES,
    MAX_TS_MS,
    MIN_TS_MS,
    PURCHASE,
    RATING,
    VIEW,
    EventBatch,
    Rejection,
    batch_from_columns,
    parse_arrow,
    parse_csv,
    parse_json_lines,
    parse_records,
    split_feedback,
    valid_id,
    validate_record,
)

T0 = 1_700_000_000_000  # 2023-11-14, a plausible event time in epoch ms

REASONS = {
    "not_an_object",
    "missing_field",
    "bad_id",
    "unknown_event_type",
    "bad_timestamp",
    "timestamp_out_of_range",
    "bad_field",
    "too_large",
    "not_utf8",
    "bad_json",
    "bad_csv",
}


def event(**fields):
    rec = {"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": T0}
    rec.update(fields)
    return {k: v for k, v in rec.items() if v is not _DROP}


_DROP = object()


def line(**fields) -> bytes:
    return orjson.dumps(event(**fields))


def reasons(result) -> list[str]:
    return [r.reason for r in result.rejections]


# -- good records ------------------------------------------------------------


def test_json_lines_become_columns():
    lines = [
        line(),
        b"",  # blank lines are skipped, not rejected
        "   ",
        line(
            user_id="u2",
            item_id="i9",
            event_type="purchase",
            ts=T0 + 5,
            session_id="s-1",
            quantity=2,
            price=9.5,
            query="red shoes",
        ).decode(),  # str lines work like bytes
        line(event_type="rating", rating=4.5, ts=T0 + 7),
    ]
    result = parse_json_lines(lines)
    assert result.rejections == []
    ev = result.events
    assert len(ev) == 3
    assert ev.user.tolist() == ["u1", "u2", "u1"]
    assert ev.item.tolist() == ["i1", "i9", "i1"]
    assert ev.etype.dtype == np.int8 and ev.etype.tolist() == [VIEW, PURCHASE, RATING]
    assert ev.ts.dtype == np.int64 and ev.ts.tolist() == [T0, T0 + 5, T0 + 7]
    assert ev.session.tolist() == ["", "s-1", ""]
    assert ev.query.tolist() == ["", "red shoes", ""]
    # Missing optional numbers are NaN.
    assert np.isnan(ev.quantity[0]) and ev.quantity[1] == 2.0 and np.isnan(ev.quantity[2])
    assert np.isnan(ev.price[0]) and ev.price[1] == 9.5
    assert np.isnan(ev.rating[1]) and ev.rating[2] == 4.5


def test_event_codes_follow_event_types_order():
    assert EVENT_TYPES == ("view", "click", "add_to_cart", "remove_from_cart", "favorite", "purchase", "rating", "forget", "impression")
    assert [EVENT_CODE[n] for n in EVENT_TYPES] == list(range(9))
    result = parse_records([event(event_type=name, rating=3, rec_id="r1.~.~.home.5.00000000.0123456789abcdef", position=0) for name in EVENT_TYPES])
    assert result.rejections == []
    assert result.events.etype.tolist() == list(range(9))


@pytest.mark.parametrize(
    "ts, expected",
    [
        (T0, T0),
        (str(T0), T0),  # digits as a string
        (f"  {T0} ", T0),  # surrounding blanks are ignored
        (float(T0), T0),  # an integral float
        (MIN_TS_MS, MIN_TS_MS),  # both range ends are inclusive
        (MAX_TS_MS, MAX_TS_MS),
    ],
)
def test_accepted_timestamps(ts, expected):
    result = parse_records([event(ts=ts)])
    assert result.rejections == []
    assert result.events.ts.tolist() == [expected]


def test_integer_ids_become_strings():
    result = parse_records([event(user_id=42, item_id=-7)])  # "-7" is in the id charset
    assert result.rejections == []
    assert result.events.user.tolist() == ["42"] and result.events.item.tolist() == ["-7"]


def test_id_charset_and_length_bounds():
    longest = "a" * 128
    ok = parse_records([event(user_id=longest, item_id="A-z_0.9:x@y")])
    assert ok.rejections == [] and ok.events.user.tolist() == [longest]
    assert valid_id("A-z_0.9:x@y") and valid_id("x" * 128)
    for bad in ("", "a b", "a*", "x" * 129, "é", "a/b", "\na", "a\nb", 5, None, True):
        assert not valid_id(bad), bad


def test_forget_needs_no_item():
    result = parse_records([{"user_id": "u1", "event_type": "forget", "ts": T0}, event(event_type="forget", item_id="not valid*")])
    assert result.rejections == []
    assert result.events.etype.tolist() == [FORGET, FORGET]
    assert result.events.item.tolist() == ["", ""]


def test_quantity_price_query_bounds_accepted():
    result = parse_records(
        [
            event(quantity=1, price=0),
            event(quantity=10_000, price=0.01, query="q" * 512),
            event(quantity="3", price="2.5"),  # numeric strings (CSV) are numbers
            event(quantity=None, price="", query=None, session_id=None),  # null/empty = absent
        ]
    )
    assert result.rejections == []
    assert result.events.quantity[:3].tolist() == [1.0, 10_000.0, 3.0]
    assert math.isnan(result.events.quantity[3])
    assert result.events.price[:3].tolist() == [0.0, 0.01, 2.5]
    assert result.events.query[1] == "q" * 512


def test_record_of_exactly_the_size_limit_is_accepted():
    base = line(query="")
    # Pad with spaces (valid JSON whitespace) up to exactly MAX_RECORD_BYTES.
    exact = base[:-1] + b" " * (MAX_RECORD_BYTES - len(base)) + b"}"
    assert len(exact) == MAX_RECORD_BYTES
    assert parse_json_lines([exact]).rejections == []
    over = base[:-1] + b" " * (MAX_RECORD_BYTES - len(base) + 1) + b"}"
    assert reasons(parse_json_lines([over])) == ["too_large"]


# -- rejections ----------------------------------------------------------------

REJECTED = [
    # (record, reason, words in the detail)
    ([1, 2], "not_an_object", "object"),
    ("just a string", "not_an_object", "object"),
    (None, "not_an_object", "object"),
    (event(user_id=_DROP), "missing_field", "user_id"),
    (event(event_type=_DROP), "missing_field", "event_type"),
    (event(item_id=_DROP), "missing_field", "item_id"),
    (event(ts=_DROP), "missing_field", "ts"),
    (event(event_type="rating"), "missing_field", "rating"),  # rating events need a rating
    (event(user_id="a b"), "bad_id", "user_id"),
    (event(user_id="a*"), "bad_id", "user_id"),  # no glob characters reach a Redis key
    (event(user_id="u" * 129), "bad_id", "user_id"),  # over the 128-char limit
    (event(user_id=""), "bad_id", "user_id"),
    (event(user_id=1.5), "bad_id", "user_id"),
    (event(user_id=True), "bad_id", "user_id"),  # booleans are not integer ids
    (event(user_id=10**200), "bad_id", "user_id"),  # a huge int id is 201 digits long
    (event(item_id="x y"), "bad_id", "item_id"),
    (event(item_id="*"), "bad_id", "item_id"),
    (event(item_id=["i1"]), "bad_id", "item_id"),
    (event(session_id="s 1"), "bad_id", "session_id"),
    (event(event_type="buy"), "unknown_event_type", "view"),
    (event(event_type=5), "unknown_event_type", "event_type"),
    (event(event_type=["view"]), "unknown_event_type", "event_type"),
    (event(ts="yesterday"), "bad_timestamp", "ts"),
    (event(ts=1.5e12 + 0.5), "bad_timestamp", "ts"),  # not integral
    (event(ts=True), "bad_timestamp", "ts"),  # booleans are not numbers
    (event(ts=None), "bad_timestamp", "ts"),
    (event(ts=math.nan), "bad_timestamp", "ts"),
    (event(ts=math.inf), "bad_timestamp", "ts"),
    (event(ts=[T0]), "bad_timestamp", "ts"),
    (event(ts=f"{T0}.0"), "bad_timestamp", "ts"),
    (event(ts=-1), "timestamp_out_of_range", "1990"),  # negative
    (event(ts=f"-{T0}"), "timestamp_out_of_range", "1990"),
    (event(ts=MIN_TS_MS - 1), "timestamp_out_of_range", "1990"),
    (event(ts=MAX_TS_MS + 1), "timestamp_out_of_range", "2100"),  # far future
    (event(ts=10**30), "timestamp_out_of_range", "2100"),
    (event(quantity=0), "bad_field", "quantity"),
    (event(quantity=10_001), "bad_field", "quantity"),
    (event(quantity="two"), "bad_field", "quantity"),
    (event(quantity=True), "bad_field", "quantity"),  # booleans are not numbers
    (event(quantity=math.nan), "bad_field", "finite"),
    (event(quantity=math.inf), "bad_field", "finite"),
    (event(quantity=[1]), "bad_field", "quantity"),
    (event(price=-0.01), "bad_field", "price"),
    (event(price=False), "bad_field", "price"),
    (event(price=-math.inf), "bad_field", "finite"),
    (event(price="1e400"), "bad_field", "finite"),  # a string that parses to inf
    (event(event_type="rating", rating="good"), "bad_field", "rating"),
    (event(event_type="rating", rating=math.nan), "bad_field", "finite"),
    (event(query="q" * 513), "bad_field", "query"),
    (event(query=5), "bad_field", "query"),
]


@pytest.mark.parametrize("record, reason, detail", REJECTED, ids=[f"{r}-{i}" for i, (_, r, _) in enumerate(REJECTED)])
def test_each_rejection_reason(record, reason, detail):
    result = parse_records([record, event()])  # a good record next to it is unaffected
    assert reasons(result) == [reason]
    assert detail in result.rejections[0].detail
    assert len(result.events) == 1


def test_checks_run_in_field_order():
    # Several problems at once: the first in the order user, event_type, item, ts, numbers wins.
    assert reasons(parse_records([{"user_id": "a b", "event_type": "nope", "ts": "x"}])) == ["bad_id"]
    assert reasons(parse_records([{"user_id": "u", "event_type": "nope", "item_id": "*"}])) == ["unknown_event_type"]
    assert reasons(parse_records([event(item_id="*", ts="x")])) == ["bad_id"]
    assert reasons(parse_records([event(ts="x", quantity=0)])) == ["bad_timestamp"]


def test_a_json_array_line_is_a_batch_of_events():
    good, bad = event(user_id="u7"), event(user_id="a b")
    result = parse_json_lines([orjson.dumps([good, bad, 5]), line(), b"[]"])  # [] is an empty batch: no outcome
    assert result.events.user.tolist() == ["u7", "u1"]
    assert reasons(result) == ["bad_id", "not_an_object"]
    assert result.rejections[0].raw == orjson.dumps(bad).decode()  # each element is dead-lettered alone
    assert result.rejections[1].raw == "5"
    # A batch line may exceed the single-record limit; each element may not.
    many = [event(user_id=f"u{k}", query="q" * 400) for k in range(100)]
    big_line = orjson.dumps(many)
    assert MAX_RECORD_BYTES < len(big_line) < MAX_BATCH_LINE_BYTES
    assert len(parse_json_lines([big_line]).events) == 100
    huge_element = orjson.dumps([event(user_id="u9", query="q" * MAX_RECORD_BYTES), good])
    result = parse_json_lines([huge_element])
    assert reasons(result) == ["too_large"] and result.events.user.tolist() == ["u7"]


def test_json_line_level_rejections_keep_the_raw_record():
    bad_utf8 = b'{"user_id": "u\xff", "item_id": "i1", "event_type": "view", "ts": 1}'
    huge = b'{"query": "' + b"x" * MAX_RECORD_BYTES + b'"}'
    result = parse_json_lines([bad_utf8, b'{"user_id": ', b"NaN", huge, line(user_id="a*"), line()])
    assert reasons(result) == ["not_utf8", "bad_json", "bad_json", "too_large", "bad_id"]
    assert len(result.events) == 1
    not_utf8, truncated_json, nan_json, too_large, bad_id = result.rejections
    # Undecodable bytes are kept visible as escapes in the dead-letter text.
    assert not_utf8.raw == '{"user_id": "u\\xff", "item_id": "i1", "event_type": "view", "ts": 1}'
    assert truncated_json.raw == '{"user_id": '
    assert nan_json.raw == "NaN"
    assert len(too_large.raw) == MAX_RECORD_BYTES  # capped for the dead-letter stream
    assert bad_id.raw == line(user_id="a*").decode()
    assert "16384" in too_large.detail


def test_rejection_raw_of_decoded_records_is_json():
    result = parse_records([event(user_id="a b"), {1: "x"}, [{1, 2}]])
    assert [r.raw for r in result.rejections[:2]] == [orjson.dumps(event(user_id="a b")).decode(), '{"1":"x"}']
    assert reasons(result) == ["bad_id", "missing_field", "not_an_object"]
    assert result.rejections[2].raw == repr([{1, 2}])  # not JSON-able: repr
    payload = orjson.loads(result.rejections[0].to_json())
    assert payload == {"reason": "bad_id", "detail": result.rejections[0].detail, "raw": result.rejections[0].raw}


def test_validate_record_returns_row_tuple():
    rows, rejection = validate_record(event(session_id=7, quantity=2))
    assert rejection is None
    [(user, item, code, ts, session, quantity, price, rating, query, rec_id, position)] = rows
    assert (user, item, code, ts, session, quantity, query, rec_id, position) == ("u1", "i1", VIEW, T0, "7", 2.0, "", "", -1)
    assert math.isnan(price) and math.isnan(rating)


REC = "r1.~.~.home.abc.0123abcd.0123456789abcdef"


def test_impression_is_one_row_per_shown_item():
    rows, rejection = validate_record({"user_id": "u1", "event_type": "impression", "rec_id": REC, "items": ["a", "b", "c"], "ts": T0})
    assert rejection is None
    assert [(r[1], r[2], r[9], r[10]) for r in rows] == [("a", IMPRESSION, REC, 0), ("b", IMPRESSION, REC, 1), ("c", IMPRESSION, REC, 2)]
    rows, _ = validate_record({"user_id": "u1", "event_type": "impression", "rec_id": REC, "items": ["a", "b"], "positions": [4, 7], "ts": T0})
    assert [(r[1], r[10]) for r in rows] == [("a", 4), ("b", 7)]
    # A one-item impression (what the job's spool holds after the API) round-trips.
    batch = parse_records([{"user_id": "u1", "event_type": "impression", "rec_id": REC, "items": ["a", "b"], "ts": T0}]).events
    again = parse_json_lines(batch.to_jsonl().splitlines()).events
    assert again.item.tolist() == ["a", "b"] and again.position.tolist() == [0, 1] and again.rec_id.tolist() == [REC, REC]


@pytest.mark.parametrize(
    "record, reason",
    [
        ({"event_type": "impression", "items": ["a"]}, "missing_field"),  # no rec_id
        ({"event_type": "impression", "rec_id": "bad id!", "items": ["a"]}, "bad_rec_id"),
        ({"event_type": "impression", "rec_id": REC, "items": []}, "bad_field"),
        ({"event_type": "impression", "rec_id": REC, "items": ["a", "a"]}, "bad_field"),
        ({"event_type": "impression", "rec_id": REC, "items": ["a", "b"], "positions": [0]}, "bad_field"),
        ({"event_type": "impression", "rec_id": REC, "items": ["a"], "positions": [-1]}, "bad_field"),
        ({"event_type": "impression", "rec_id": REC, "items": ["a*"]}, "bad_id"),
        ({"event_type": "impression", "rec_id": REC, "item_id": "a"}, "missing_field"),  # one item needs its position
        ({"event_type": "click", "item_id": "a", "items": ["a"]}, "bad_field"),
        ({"event_type": "click", "item_id": "a", "position": 1000}, "bad_field"),
        ({"event_type": "click", "item_id": "a", "position": True}, "bad_field"),
    ],
)
def test_bad_feedback_is_rejected_with_a_reason(record, reason):
    _, rejection = validate_record({"user_id": "u1", "ts": T0, **record})
    assert rejection is not None and rejection.reason == reason


def test_click_keeps_its_rec_id_and_position():
    [row], rejection = validate_record(event(event_type="click", rec_id=REC, position=3))
    assert rejection is None and row[9:] == (REC, 3)


def test_split_feedback_keeps_impressions_off_the_learning_path():
    batch = parse_records(
        [
            event(event_type="view"),
            event(event_type="click", rec_id=REC, position=0),
            {"user_id": "u1", "event_type": "impression", "rec_id": REC, "items": ["a", "b"], "ts": T0},
            event(event_type="purchase"),
            {"user_id": "u1", "event_type": "forget", "ts": T0},
        ]
    ).events
    interactions, feedback = split_feedback(batch)
    assert IMPRESSION not in interactions.etype.tolist() and len(interactions) == 4
    assert [EVENT_TYPES[c] for c in feedback.etype] == ["click", "impression", "impression", "purchase", "forget"]


# -- CSV and Arrow ------------------------------------------------------------


def test_csv_rows_and_rejections():
    text = (
        "user_id,item_id,event_type,ts,quantity,rating,session_id\n"
        f"u1,i1,view,{T0},,,s1\n"
        f"u2,i2,rating,{T0 + 1},,4,\n"
        f"u3,i3,add_to_cart,{T0 + 2},2,,\n"
        f"u4,i4,view,{T0 + 3},,,,extra\n"  # more cells than header names
        f"u5,i5,view,not-a-time,,,\n"
        f"u6,,view,{T0},,,\n"  # empty cell = missing field
        f"u7,i7,view\n"  # fewer cells: the rest are missing
    )
    result = parse_csv(text)
    assert result.events.user.tolist() == ["u1", "u2", "u3"]
    assert result.events.etype.tolist() == [VIEW, RATING, ADD_TO_CART]
    assert result.events.ts.tolist() == [T0, T0 + 1, T0 + 2]
    assert result.events.session.tolist() == ["s1", "", ""]
    assert result.events.rating[1] == 4.0 and result.events.quantity[2] == 2.0
    assert reasons(result) == ["bad_csv", "bad_timestamp", "missing_field", "missing_field"]
    assert result.rejections[0].raw.startswith("u4,i4,view,")
    assert "item_id" in result.rejections[2].detail and "ts" in result.rejections[3].detail


def test_csv_without_rows():
    assert len(parse_csv("").events) == 0 and parse_csv("").rejections == []
    only_header = parse_csv("user_id,item_id,event_type,ts\n")
    assert len(only_header.events) == 0 and only_header.rejections == []


def test_arrow_table_and_record_batch():
    table = pa.table(
        {
            "user_id": ["u1", "u2", "bad id", "u4"],
            "item_id": ["i1", "i2", "i3", None],
            "event_type": ["view", "purchase", "view", "view"],
            "ts": pa.array([T0, T0 + 1, T0 + 2, T0 + 3], type=pa.int64()),
            "price": [None, 3.25, None, None],
        }
    )
    for source in (table, table.to_batches()[0]):
        result = parse_arrow(source)
        assert result.events.user.tolist() == ["u1", "u2"]
        assert result.events.etype.tolist() == [VIEW, PURCHASE]
        assert math.isnan(result.events.price[0]) and result.events.price[1] == 3.25
        assert reasons(result) == ["bad_id", "missing_field"]


def test_all_formats_agree():
    records = [event(), event(user_id="u2", event_type="purchase", quantity=3, price=1.5, ts=T0 + 9), event(user_id="x*")]
    from_json = parse_json_lines([orjson.dumps(r) for r in records])
    from_records = parse_records(records)
    schema = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("event_type", pa.string()), ("ts", pa.int64()), ("quantity", pa.int64()), ("price", pa.float64())])
    from_arrow = parse_arrow(pa.Table.from_pylist(records, schema=schema))
    header = "user_id,item_id,event_type,ts,quantity,price\n"
    rows = "".join(f"{r['user_id']},{r['item_id']},{r['event_type']},{r['ts']},{r.get('quantity', '')},{r.get('price', '')}\n" for r in records)
    from_csv = parse_csv(header + rows)
    for other in (from_records, from_arrow, from_csv):
        assert other.events.to_records() == from_json.events.to_records()
        assert reasons(other) == reasons(from_json) == ["bad_id"]


# -- batch helpers -------------------------------------------------------------


def sample_batch() -> EventBatch:
    return batch_from_columns(
        user=["a", "b", "c", "d", "e"],
        item=["i1", "i2", "i3", "i4", "i5"],
        event_type=["view", "click", "purchase", "view", "rating"],
        ts=[T0 + 30, T0 + 10, T0 + 30, T0 + 10, T0 + 20],
        session=["s", "", "", "", ""],
        quantity=[np.nan, np.nan, 2, np.nan, np.nan],
        price=[np.nan, np.nan, 1.25, np.nan, np.nan],
        rating=[np.nan, np.nan, np.nan, np.nan, 4.0],
        query=["", "", "", "q", ""],
    )


def test_batch_from_columns_names_or_codes():
    by_name = batch_from_columns(["u"], ["i"], ["add_to_cart"], [T0])
    by_code = batch_from_columns(["u"], ["i"], np.array([ADD_TO_CART]), [T0])
    assert by_name.etype.dtype == np.int8 and by_name.etype.tolist() == by_code.etype.tolist() == [ADD_TO_CART]
    assert by_name.session.tolist() == [""] and math.isnan(by_name.rating[0])


def test_batch_columns_must_have_equal_length():
    with pytest.raises(ValueError, match="column item has 1 rows, expected 2"):
        EventBatch(user=np.array(["a", "b"], dtype=object), item=np.array(["i"], dtype=object), etype=np.zeros(2, np.int8), ts=np.zeros(2, np.int64))


def test_take_by_mask_index_and_slice():
    b = sample_batch()
    assert b.take(np.array([True, False, True, False, False])).user.tolist() == ["a", "c"]
    assert b.take(np.array([4, 0])).user.tolist() == ["e", "a"]
    sliced = b.take(slice(1, 3))
    assert sliced.user.tolist() == ["b", "c"] and sliced.quantity[1] == 2.0 and len(sliced) == 2


def test_sorted_by_time_is_stable():
    b = sample_batch().sorted_by_time()
    # ts: a=30 b=10 c=30 d=10 e=20 -> b, d (10, arrival order), e (20), a, c (30, arrival order)
    assert b.user.tolist() == ["b", "d", "e", "a", "c"]
    assert b.ts.tolist() == [T0 + 10, T0 + 10, T0 + 20, T0 + 30, T0 + 30]
    assert b.query.tolist() == ["", "q", "", "", ""]  # every column moves with its row


def test_concat():
    b = sample_batch()
    joined = EventBatch.concat([b.take(slice(0, 2)), EventBatch.empty(), b.take(slice(2, 5))])
    assert joined.to_records() == b.to_records()
    assert len(EventBatch.concat([])) == 0
    assert len(EventBatch.concat([EventBatch.empty(), EventBatch.empty()])) == 0
    assert EventBatch.concat([b]) is b


def test_to_records_only_present_fields():
    records = sample_batch().to_records()
    assert records[0] == {"user_id": "a", "item_id": "i1", "event_type": "view", "ts": T0 + 30, "session_id": "s"}
    assert records[2] == {"user_id": "c", "item_id": "i3", "event_type": "purchase", "ts": T0 + 30, "quantity": 2, "price": 1.25}
    assert isinstance(records[2]["quantity"], int)
    assert records[3]["query"] == "q" and records[4]["rating"] == 4.0


def test_jsonl_round_trip():
    b = sample_batch()
    again = parse_json_lines(b.to_jsonl().splitlines())
    assert again.rejections == []
    for name in ("user", "item", "etype", "ts", "session", "query"):
        assert getattr(again.events, name).tolist() == getattr(b, name).tolist(), name
    for name in ("quantity", "price", "rating"):
        np.testing.assert_array_equal(getattr(again.events, name), getattr(b, name))


# -- fuzzing ---------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
FIELDS = ("user_id", "item_id", "event_type", "ts", "session_id", "quantity", "price", "rating", "query")
# Plausible values next to arbitrary ones, so that many records get deep into the checks.
plausible = {
    "user_id": st.sampled_from(["u1", "u-2", 17, "", "a b", "x" * 129]),
    "item_id": st.sampled_from(["i1", "i:2", 3, "*"]),
    "event_type": st.sampled_from(list(EVENT_TYPES) + ["buy"]),
    "ts": st.integers(MIN_TS_MS - 10, MAX_TS_MS + 10) | st.just(str(T0)),
    "session_id": st.sampled_from(["s1", "", "s 1"]),
    "quantity": st.integers(-2, 10_002),
    "price": st.floats(-1, 100),
    "rating": st.floats(0, 5),
    "query": st.text(max_size=5),
}
records = st.fixed_dictionaries({}, optional={name: plausible[name] | json_values for name in FIELDS})


def outcomes_of_line(data: bytes) -> int:
    """How many accept/reject outcomes a non-blank JSON line must give: one per element of a JSON array, else one."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return 1
    return len(value) if isinstance(value, list) else 1


def _check_accounting(result, count: int) -> None:
    assert len(result.events) + len(result.rejections) == count
    assert all(isinstance(r, Rejection) and r.reason in REASONS for r in result.rejections)
    assert all(valid_id(u) for u in result.events.user.tolist())
    assert np.all((result.events.ts >= MIN_TS_MS) & (result.events.ts <= MAX_TS_MS))


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=120).filter(lambda b: b.strip()), max_size=8))
@example([b"\xff\xfe", b"{", b"[]", b"\x00", b'{"user_id":"u"}', b"\xc3("])
def test_fuzz_arbitrary_bytes_lines(lines):
    _check_accounting(parse_json_lines(lines), sum(outcomes_of_line(x) for x in lines))


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records | json_values, max_size=6))
def test_fuzz_decoded_records_and_their_json(recs):
    _check_accounting(parse_records(recs), len(recs))
    lines = [orjson.dumps(r) for r in recs]
    _check_accounting(parse_json_lines(lines), sum(outcomes_of_line(x) for x in lines))
    # The same records as one batched line (a JSON array) give the same outcome as records.
    batched = parse_json_lines([orjson.dumps(recs)]) if recs else None
    if batched is not None:
        assert batched.events.to_records() == parse_records(recs).events.to_records()
        assert reasons(batched) == reasons(parse_records(recs))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=15), min_size=1, max_size=7), max_size=5))
def test_fuzz_csv_rows(rows):
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["user_id", "item_id", "event_type", "ts", "quantity", "rating"])
    writer.writerows(rows)
    text = buffer.getvalue()
    result = parse_csv(text)
    # csv.DictReader skips only the rows that read back as no cells at all.
    rows_read = sum(1 for cells in csv.reader(io.StringIO(text)) if cells) - 1
    _check_accounting(result, rows_read)


# -- bugs --------------------------------------------------------------------------


@pytest.mark.parametrize("ts", ["--5", "\u00b2", "-\u00b9\u00b2"])
def test_odd_digit_strings_as_ts_are_rejected_not_raised(ts):
    result = parse_records([event(ts=ts)])
    assert reasons(result) == ["bad_timestamp"]


def test_huge_integer_quantity_is_rejected_not_raised():
    # Python's json module (FastAPI request bodies) decodes big integer literals to int.
    result = parse_records([event(quantity=10**400)])
    assert reasons(result) == ["bad_field"]


def test_str_line_with_lone_surrogate_is_rejected_not_raised():
    result = parse_json_lines(['{"user_id": "u\ud800", "item_id": "i1", "event_type": "view", "ts": 1700000000000}', line()])
    assert reasons(result) == ["not_utf8"] and len(result.events) == 1


def test_csv_field_over_csv_limit_is_rejected_not_raised():
    text = f"user_id,item_id,event_type,ts\nu1,i1,view,{T0}\nu2,{'x' * 200_000},view,{T0}\nu3,i3,view,{T0}\n"
    result = parse_csv(text)
    assert result.events.user.tolist() == ["u1", "u3"]
    assert reasons(result) in (["too_large"], ["bad_csv"])


def test_boolean_session_id_is_rejected():
    assert reasons(parse_records([event(session_id=True)])) == ["bad_id"]


def test_id_with_trailing_newline_is_rejected():
    assert not valid_id("u1\n")
    assert reasons(parse_json_lines([line(user_id="u1\n")])) == ["bad_id"]
