"""A corpus of bad event records: each one must be dead-lettered with a reason, none may crash anything."""

from __future__ import annotations

TS = 1_700_000_000_000


def _event(**fields) -> dict:
    base = {"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": TS}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


BAD_JSON_LINES: list[bytes] = [
    b"{bad json",
    b"[1, 2",
    b'"just a string"',
    b"42",
    b"null",
    b"{}",
    b'{"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": NaN}',
    b'{"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": 1700000000000, "price": Infinity}',
    b'{"user_id": "u\xff\xfe", "item_id": "i1", "event_type": "view", "ts": 1700000000000}',  # not UTF-8
    b'{"user_id": "' + b"u" * 20_000 + b'", "item_id": "i1", "event_type": "view", "ts": 1700000000000}',  # huge
]

BAD_RECORDS: list[dict] = [
    _event(user_id=...),
    _event(item_id=...),
    _event(event_type=...),
    _event(ts=...),
    _event(user_id="has space"),
    _event(user_id="star*"),
    _event(user_id="x" * 200),
    _event(item_id=""),
    _event(item_id={"nested": "object"}),
    _event(user_id=["a", "list"]),
    _event(event_type="teleport"),
    _event(event_type=5),
    _event(ts="yesterday"),
    _event(ts=TS + 0.5),
    _event(ts=-5),
    _event(ts=10**16),  # far future
    _event(ts=True),
    _event(quantity=0),
    _event(quantity=-3),
    _event(price=-1),
    _event(price="cheap"),
    _event(event_type="rating"),  # a rating event without a rating
    _event(event_type="rating", rating="five"),
    _event(query="q" * 1000),
    _event(session_id="bad session!"),
    _event(user_id=True),
]


def bad_lines() -> list[bytes]:
    import orjson

    return BAD_JSON_LINES + [orjson.dumps(r) for r in BAD_RECORDS]
