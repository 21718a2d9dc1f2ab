"""The catalog model: validation of catalog records, JSON-lines parsing and the upsert semantics."""

from __future__ import annotations

import math

import orjson
import pytest

from transforms.catalog import MAX_TAGS, MAX_TITLE_LENGTH, Catalog, CatalogItem, parse_catalog_lines, validate_catalog_record
from transforms.events import MAX_RECORD_BYTES

T0 = 1_700_000_000_000


def test_full_record():
    item, rejection = validate_catalog_record(
        {
            "item_id": "sku-1",
            "title": "Red Shoe",
            "category": "fashion/shoes/running",
            "brand": "Acme",
            "price": 59.9,
            "tags": ["red", "sport"],
            "created_at": T0,
            "in_stock": False,
            "ts": T0 + 5,
        }
    )
    assert rejection is None
    assert item == CatalogItem(
        item_id="sku-1", title="Red Shoe", category="fashion/shoes/running", brand="Acme", price=59.9,
        tags=("red", "sport"), created_at=T0, in_stock=False, ts=T0 + 5,
    )
    assert item.top_category == "fashion"


def test_defaults_and_conversions():
    item, rejection = validate_catalog_record({"item_id": 123, "tags": "a,b,,c", "created_at": str(T0)})
    assert rejection is None
    assert item.item_id == "123"  # integer ids become strings
    assert item.tags == ("a", "b", "c")  # comma-separated tags, empty ones dropped
    assert item.created_at == T0 and item.ts == T0  # ts defaults to created_at
    assert math.isnan(item.price) and item.in_stock is True
    assert (item.title, item.category, item.brand, item.top_category) == ("", "", "", "")
    bare, _ = validate_catalog_record({"item_id": "x"})
    assert (bare.created_at, bare.ts) == (0, 0)


REJECTED = [
    ("not an object", "not_an_object"),
    ([{"item_id": "a"}], "not_an_object"),
    ({}, "bad_id"),
    ({"item_id": "a b"}, "bad_id"),
    ({"item_id": "a*"}, "bad_id"),
    ({"item_id": True}, "bad_id"),
    ({"item_id": "x" * 129}, "bad_id"),
    ({"item_id": "a", "title": 5}, "bad_field"),
    ({"item_id": "a", "title": "t" * (MAX_TITLE_LENGTH + 1)}, "bad_field"),
    ({"item_id": "a", "category": ["x"]}, "bad_field"),
    ({"item_id": "a", "category": "bad*cat/x"}, "bad_category"),
    ({"item_id": "a", "category": "line\nbreak"}, "bad_category"),
    ({"item_id": "a", "category": "nul\x00"}, "bad_category"),
    ({"item_id": "a", "category": "a//b"}, "bad_category"),
    ({"item_id": "a", "category": "/".join("x" * 9)}, "bad_category"),
    ({"item_id": "a", "brand": {"n": 1}}, "bad_field"),
    ({"item_id": "a", "price": -1}, "bad_field"),
    ({"item_id": "a", "price": True}, "bad_field"),
    ({"item_id": "a", "price": "9.99"}, "bad_field"),
    ({"item_id": "a", "price": math.inf}, "bad_field"),
    ({"item_id": "a", "price": math.nan}, "bad_field"),
    ({"item_id": "a", "tags": [1]}, "bad_field"),
    ({"item_id": "a", "tags": ["t"] * (MAX_TAGS + 1)}, "bad_field"),
    ({"item_id": "a", "tags": {"t": 1}}, "bad_field"),
    ({"item_id": "a", "in_stock": "yes"}, "bad_field"),
    ({"item_id": "a", "in_stock": 1}, "bad_field"),
    ({"item_id": "a", "created_at": -1}, "timestamp_out_of_range"),
    ({"item_id": "a", "created_at": "soon"}, "bad_timestamp"),
    ({"item_id": "a", "ts": 1.5}, "bad_timestamp"),
    ({"item_id": "a", "ts": True}, "bad_timestamp"),
    ({"item_id": "a", "sponsored": "yes"}, "bad_sponsorship"),
    ({"item_id": "a", "sponsored": 1}, "bad_sponsorship"),
    ({"item_id": "a", "sponsored": True, "bid": -0.01}, "bad_sponsorship"),
    ({"item_id": "a", "sponsored": True, "bid": "1"}, "bad_sponsorship"),
    ({"item_id": "a", "sponsored": True, "bid": True}, "bad_sponsorship"),
    ({"item_id": "a", "sponsored": True, "bid": math.inf}, "bad_sponsorship"),
    ({"item_id": "a", "sponsored": True, "bid": math.nan}, "bad_sponsorship"),
    ({"item_id": "a", "sponsored": True, "bid": 1, "campaign": "spring sale"}, "bad_sponsorship"),
    ({"item_id": "a", "sponsored": True, "bid": 1, "campaign": "c|spend"}, "bad_sponsorship"),
    ({"item_id": "a", "sponsored": True, "bid": 1, "campaign": 7}, "bad_sponsorship"),
    ({"item_id": "a", "sponsored": True, "bid": 1, "campaign": "c1", "budget": -5}, "bad_sponsorship"),
    ({"item_id": "a", "sponsored": True, "bid": 1, "campaign": "c1", "budget": "100"}, "bad_sponsorship"),
    ({"item_id": "a", "sponsored": True, "bid": 1, "budget": 100}, "bad_sponsorship"),  # a budget belongs to a campaign
]


@pytest.mark.parametrize("record, reason", REJECTED)
def test_rejections(record, reason):
    item, rejection = validate_catalog_record(record)
    assert item is None and rejection.reason == reason


def test_bounds_accepted():
    item, rejection = validate_catalog_record({"item_id": "a", "title": "t" * MAX_TITLE_LENGTH, "tags": ["t"] * MAX_TAGS, "price": 0})
    assert rejection is None and item.price == 0.0 and len(item.tags) == MAX_TAGS


def test_parse_catalog_lines():
    good = CatalogItem(item_id="a", title="A", category="c/d", price=2.5, ts=T0)
    lines = [good.to_json(), b"", "  ", b'{"item_id": ', b'{"item_id": "b*"}', b'{"item_id": "' + b"x" * MAX_RECORD_BYTES + b'"}', '{"item_id": "z"}']
    items, rejections = parse_catalog_lines(lines)
    assert items == [good, CatalogItem(item_id="z")]  # to_json round-trips
    assert [r.reason for r in rejections] == ["bad_json", "bad_id", "too_large"]
    assert rejections[1].raw == '{"item_id": "b*"}'


def test_sponsored_item_round_trips():
    record = {"item_id": "a", "sponsored": True, "bid": 0.35, "campaign": "spring-24", "budget": 120, "ts": T0}
    item, rejection = validate_catalog_record(record)
    assert rejection is None
    assert (item.sponsored, item.bid, item.campaign, item.budget) == (True, 0.35, "spring-24", 120.0)
    assert validate_catalog_record(orjson.loads(item.to_json()))[0] == item
    bare, _ = validate_catalog_record({"item_id": "b", "sponsored": True, "bid": 0})
    assert (bare.sponsored, bare.bid, bare.campaign) == (True, 0.0, "") and math.isnan(bare.budget)
    # An item without ad fields keeps its JSON as before.
    assert set(CatalogItem(item_id="c").to_dict()) == {"item_id", "title", "category", "brand", "tags", "created_at", "in_stock", "ts"}
    assert CatalogItem(item_id="d", sponsored=True, bid=1.0).to_dict()["sponsored"] is True


def test_to_dict_omits_missing_price():
    assert "price" not in CatalogItem(item_id="a").to_dict()
    d = CatalogItem(item_id="a", price=1.0, tags=("x",)).to_dict()
    assert d["price"] == 1.0 and d["tags"] == ["x"]
    assert orjson.loads(CatalogItem(item_id="a", price=1.0).to_json())["price"] == 1.0


def test_catalog_upserts_replace():
    old = CatalogItem(item_id="a", category="books/novels", ts=1)
    new = CatalogItem(item_id="a", category="music/cds", ts=2)
    other = CatalogItem(item_id="b", category="toys", in_stock=False)
    catalog = Catalog([old, other, new])
    assert len(catalog) == 2 and "a" in catalog and "zz" not in catalog
    assert catalog.get("a") is new and catalog.get("zz") is None
    assert catalog.top_category("a") == "music" and catalog.category("a") == "music/cds"
    assert catalog.top_category("zz") == "" and catalog.category("zz") == ""
    assert catalog.in_stock("b") is False
    assert catalog.in_stock("zz") is True  # unknown items are not filtered as out of stock
    catalog.with_stock("b", True)
    assert catalog.in_stock("b") is True and catalog.get("b").category == "toys"
    catalog.with_stock("zz", False)  # unknown: no effect
    assert "zz" not in catalog
    assert sorted(i.item_id for i in catalog) == ["a", "b"]


def test_odd_digit_string_created_at_is_rejected_not_raised():
    item, rejection = validate_catalog_record({"item_id": "a", "created_at": "--5"})
    assert item is None and rejection.reason == "bad_timestamp"


def test_huge_integer_price_is_rejected_not_raised():
    item, rejection = validate_catalog_record({"item_id": "a", "price": 10**400})
    assert item is None and rejection.reason == "bad_field"


def test_embedding_switches_are_parsed_only_where_the_caller_accepts_them():
    from transforms.catalog import EmbeddingSwitch

    lines = [
        '{"embeddings": "/exports/20261130T000000Z", "ts": 5}',
        '{"embeddings": "", "ts": 5}',
        '{"embeddings": "/x", "ts": -1}',
        '{"embeddings": "/x", "ts": 5, "item_id": "a"}',
        '{"item_id": "a", "ts": 1}',
    ]
    switches: list = []
    items, rejections = parse_catalog_lines(lines, switches)
    assert switches == [EmbeddingSwitch("/exports/20261130T000000Z", 5)]
    assert [i.item_id for i in items] == ["a"]
    assert [r.reason for r in rejections] == ["bad_field", "bad_timestamp", "bad_field"]
    # Without a list (the API, the backfill) a switch is an item without an id.
    items, rejections = parse_catalog_lines(lines[:1])
    assert items == [] and [r.reason for r in rejections] == ["bad_id"]
    assert EmbeddingSwitch("/p", 3).to_dict() == {"embeddings": "/p", "ts": 3}


def test_experiment_controls_are_parsed_on_the_job_catalog_input():
    from transforms.experiments import ExperimentStop, parse_experiment

    declaration = {"id": "e1", "variants": {"control": {"share": 0.5}, "b": {"share": 0.5, "preset": "popularity"}}}
    lines = [
        orjson.dumps({"experiment": declaration, "ts": 7}),
        '{"experiment_stop": "e1", "ts": 9}',
        orjson.dumps({"experiment": {**declaration, "variants": {"a": {"share": 1.0}}}, "ts": 7}),
        '{"experiment_stop": "e1", "ts": 9, "item_id": "a"}',
        '{"item_id": "a", "ts": 1}',
    ]
    switches: list = []
    items, rejections = parse_catalog_lines(lines, switches)
    assert [s.to_dict() for s in switches] == [{"experiment": parse_experiment(declaration).to_dict(), "ts": 7}, ExperimentStop("e1", 9).to_dict()]
    assert [i.item_id for i in items] == ["a"]
    assert [r.reason for r in rejections] == ["bad_experiment", "bad_experiment"]
    assert "needs 2-16 variants" in rejections[0].detail
    # Elsewhere a control is an item without an id.
    assert [r.reason for r in parse_catalog_lines(lines[:1])[1]] == ["bad_id"]
