"""The synthetic shop: determinism, exact counts, time order, funnel, referential integrity, formats."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from flowrec.cli import main as cli_main
from transforms.catalog import Catalog, parse_catalog_lines
from transforms.events import (
    ADD_TO_CART,
    CLICK,
    EVENT_CODE,
    PURCHASE,
    REMOVE_FROM_CART,
    VIEW,
    EventBatch,
    batch_from_columns,
    parse_arrow,
    parse_json_lines,
    valid_id,
)
from transforms.synthetic import DAY_MS, TAXONOMY, ShopParams, events_to_jsonl, generate_shop, write_shop

START = 1_700_000_000_000
SMALL = ShopParams(chunk_events=4_000)


@pytest.fixture(scope="module")
def shop():
    """30k events of a 300-user, 200-item shop over 14 days, in 4k-event chunks."""
    catalog, stream = generate_shop(users=300, items=200, events=30_000, seed=3, params=SMALL)
    batches = list(stream)
    return catalog, batches, EventBatch.concat(batches)


def test_exact_event_count_and_chunk_sizes(shop):
    _, batches, events = shop
    assert len(events) == 30_000
    assert [len(b) for b in batches] == [4_000] * 7 + [2_000]


@pytest.mark.parametrize("count", [0, 1, 17, 999, 5_001])
def test_exact_count_for_any_size(count):
    _, stream = generate_shop(users=20, items=30, events=count, seed=11, days=3.0, params=SMALL)
    assert sum(len(b) for b in stream) == count


def test_events_are_in_time_order_within_the_period(shop):
    _, _, events = shop
    assert np.all(np.diff(events.ts) >= 0)
    assert events.ts[0] >= START
    # Sessions may run past the end, but by less than a session's maximum span.
    assert events.ts[-1] < START + 14 * DAY_MS + SMALL.max_session_ms()


def test_funnel_ratios(shop):
    _, _, events = shop
    counts = np.bincount(events.etype, minlength=8)
    views = counts[VIEW]
    # Target 100 : 30 : 8 : 3.
    assert 0.25 < counts[CLICK] / views < 0.35
    assert 0.06 < counts[ADD_TO_CART] / views < 0.10
    assert 0.02 < counts[PURCHASE] / views < 0.04
    assert 0 < counts[REMOVE_FROM_CART] < counts[ADD_TO_CART]
    assert counts[EVENT_CODE["favorite"]] > 0
    assert counts[EVENT_CODE["rating"]] == 0


def test_items_exist_and_were_created_before_their_events(shop):
    catalog, _, events = shop
    assert len(catalog) == 200
    by_id = Catalog(catalog)
    created = np.array([by_id.get(i).created_at for i in events.item])
    assert np.all(created <= events.ts)
    # A sold-out item's catalog version is dated at its sell-out; it gets no events after it.
    gone = np.array([by_id.get(i).ts if not by_id.get(i).in_stock else np.iinfo(np.int64).max for i in events.item])
    assert np.all(events.ts < gone)


def test_catalog_has_new_and_sold_out_items_and_sane_fields(shop):
    catalog, _, _ = shop
    tops = {t[0]: {s for s, _ in t[4]} for t in TAXONOMY}
    assert sum(item.created_at >= START for item in catalog) == 20  # 10 % arrive during the period
    assert sum(not item.in_stock for item in catalog) == 4  # 2 % sell out
    for item in catalog:
        top, sub = item.category.split("/")
        assert sub in tops[top]
        assert item.brand in item.title and item.tags[0] == top
        assert item.price >= 0.5 and round(item.price, 2) == item.price
        assert valid_id(item.item_id)
    assert [item.item_id for item in catalog][:3] == ["i000001", "i000002", "i000003"]


def test_ids_are_valid_and_sessions_belong_to_one_user(shop):
    _, _, events = shop
    assert all(valid_id(u) and u.startswith("u") for u in set(events.user))
    assert all(valid_id(i) and i.startswith("i") for i in set(events.item))
    assert all(valid_id(s) for s in set(events.session))
    owners: dict[str, set[str]] = {}
    for session, user in zip(events.session, events.user):
        owners.setdefault(session, set()).add(user)
    assert all(len(users) == 1 for users in owners.values())


def test_funnel_steps_follow_a_view_of_the_same_item_in_the_session(shop):
    _, _, events = shop
    first_view: dict[tuple[str, str], int] = {}
    for session, item, etype, ts in zip(events.session, events.item, events.etype, events.ts):
        key = (session, item)
        if etype == VIEW:
            first_view.setdefault(key, int(ts))
        else:
            assert key in first_view and first_view[key] <= ts


def test_purchases_carry_catalog_price_and_quantity(shop):
    catalog, _, events = shop
    price = {item.item_id: item.price for item in catalog}
    bought = events.etype == PURCHASE
    assert np.all(np.isnan(events.price[~bought])) and np.all(np.isnan(events.quantity[~bought]))
    assert all(events.price[k] == price[events.item[k]] for k in np.flatnonzero(bought))
    q = events.quantity[bought]
    assert np.all((q >= 1) & (q <= 10) & (q == np.round(q)))
    assert np.mean(q == 1) > 0.6


def test_daily_cycle_peaks_in_the_evening(shop):
    _, _, events = shop
    hour = (events.ts // 3_600_000) % 24
    evening = np.isin(hour, [18, 19, 20, 21, 22]).sum()
    morning = np.isin(hour, [6, 7, 8, 9, 10]).sum()
    assert evening > 1.8 * morning


def test_users_concentrate_on_their_favourite_categories(shop):
    _, _, events = shop
    catalog = Catalog(shop[0])
    top = np.array([catalog.top_category(i) for i in events.item])
    overall = max(Counter(top).values()) / len(top)
    shares = []
    for user in set(events.user):
        mine = top[events.user == user]
        if len(mine) >= 50:
            shares.append(max(Counter(mine).values()) / len(mine))
    assert overall < 0.3
    assert np.mean(shares) > 0.45


def test_fast_jsonl_matches_to_jsonl(shop):
    _, batches, _ = shop
    assert events_to_jsonl(batches[0]) == batches[0].to_jsonl()
    odd = batch_from_columns(
        user=["a", 'quote"d', "c"],
        item=["x", "y", "z"],
        event_type=["view", "rating", "purchase"],
        ts=[START, START + 1, START + 2],
        session=["", "s1", "s2"],
        rating=[math.nan, 4.0, math.nan],
        quantity=[math.nan, math.nan, 2],
        price=[math.nan, math.nan, 9.5],
        query=["", "", "red shoes"],
    )
    assert events_to_jsonl(odd) == odd.to_jsonl()
    assert events_to_jsonl(EventBatch.empty()) == b""


def test_written_files_are_deterministic_and_parse_cleanly(tmp_path: Path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    summary = write_shop(a, users=80, items=60, events=6_000, seed=5, days=2.0)
    write_shop(b, users=80, items=60, events=6_000, seed=5, days=2.0)
    write_shop(c, users=80, items=60, events=6_000, seed=6, days=2.0)
    for name in ("catalog.jsonl", "events.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
        assert (a / name).read_bytes() != (c / name).read_bytes()
    assert summary.events == 6_000 and sum(summary.event_counts.values()) == 6_000
    lines = (a / "events.jsonl").read_bytes().splitlines()
    assert len(lines) == 6_000
    parsed = parse_json_lines(lines)
    assert parsed.rejections == []
    catalog, stream = generate_shop(users=80, items=60, events=6_000, seed=5, days=2.0)
    expected = EventBatch.concat(list(stream))
    for column in ("user", "item", "etype", "ts", "session"):
        assert np.array_equal(getattr(parsed.events, column), getattr(expected, column))
    assert np.array_equal(parsed.events.price, expected.price, equal_nan=True)
    assert np.array_equal(parsed.events.quantity, expected.quantity, equal_nan=True)
    items, rejected = parse_catalog_lines((a / "catalog.jsonl").read_bytes().splitlines())
    assert rejected == [] and items == catalog


def test_parquet_output_is_readable(tmp_path: Path):
    write_shop(tmp_path, users=40, items=30, events=3_000, seed=2, fmt="parquet", days=1.0, params=ShopParams(chunk_events=1_000))
    table = pq.read_table(tmp_path / "events.parquet")
    assert table.num_rows == 3_000
    assert pq.ParquetFile(tmp_path / "events.parquet").num_row_groups == 3
    parsed = parse_arrow(table)
    assert parsed.rejections == []
    from_json = parse_json_lines((tmp_path / "events.jsonl").read_bytes().splitlines()).events
    assert np.array_equal(parsed.events.ts, from_json.ts) and np.array_equal(parsed.events.item, from_json.item)
    assert np.array_equal(parsed.events.quantity, from_json.quantity, equal_nan=True)
    catalog = pq.read_table(tmp_path / "catalog.parquet").to_pylist()
    assert len(catalog) == 30 and catalog[0]["item_id"] == "i000001" and isinstance(catalog[0]["tags"], list)


def test_empty_event_stream_still_writes_files(tmp_path: Path):
    summary = write_shop(tmp_path, users=5, items=5, events=0, seed=1, fmt="parquet")
    assert summary.events == 0
    assert (tmp_path / "events.jsonl").read_bytes() == b""
    assert pq.read_table(tmp_path / "events.parquet").num_rows == 0
    assert len((tmp_path / "catalog.jsonl").read_bytes().splitlines()) == 5


def test_single_item_shop_works():
    catalog, stream = generate_shop(users=3, items=1, events=500, seed=4, days=1.0)
    events = EventBatch.concat(list(stream))
    assert len(events) == 500 and set(events.item) == {catalog[0].item_id}


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(users=0, items=5, events=10),
        dict(users=5, items=0, events=10),
        dict(users=5, items=5, events=-1),
        dict(users=5, items=5, events=10, days=0.0),
        dict(users=5, items=5, events=10, start_ms=631_152_000_000),  # items would predate MIN_TS_MS (1990)
    ],
)
def test_impossible_sizes_are_rejected(kwargs):
    with pytest.raises(ValueError):
        generate_shop(seed=1, **kwargs)


def test_generate_command_writes_a_shop(tmp_path: Path, capsys):
    out = tmp_path / "shop"
    code = cli_main(["generate", "--users", "50", "--items", "40", "--events", "2000", "--seed", "1", "--days", "2", "--out", str(out), "--format", "parquet"])
    assert code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("wrote 2000 events (view=") and "40 items, 50 users" in line and "events/s" in line
    assert len((out / "events.jsonl").read_bytes().splitlines()) == 2000
    assert pq.read_table(out / "events.parquet").num_rows == 2000
    assert len((out / "catalog.jsonl").read_bytes().splitlines()) == 40


def test_generate_command_rejects_bad_sizes(tmp_path: Path, capsys):
    code = cli_main(["generate", "--users", "0", "--out", str(tmp_path)])
    assert code == 2
    assert "at least one user" in capsys.readouterr().err
