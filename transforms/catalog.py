"""The catalog model: items with the content features used for content similarity and filters.

An item may be sponsored (the ad slot, :mod:`transforms.ads`): ``sponsored``
(bool), ``bid`` (cost per click, a number >= 0), optionally ``campaign`` (an
id, the unit of spend and budget) and ``budget`` (the campaign's daily budget,
>= 0, in the bid's currency; only with a campaign).  An item without these
fields is not sponsored and its JSON is as before.

Catalog changes are a stream too: every record is an upsert of one item with a
``ts`` (epoch ms) at which it takes effect; a later upsert of the same item
replaces the earlier one.  The job's catalog input also carries one kind of
control records: :class:`EmbeddingSwitch` (``{"embeddings": PATH, "ts": T}``):
serve the learned embeddings of export version ``PATH`` from ``T`` on; and the
experiment controls of :mod:`transforms.experiments` (``{"experiment": ...}``,
``{"experiment_stop": ID}``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

import orjson

from transforms.events import MAX_RECORD_BYTES, MAX_TS_MS, Rejection, _as_int_ts, _reject, valid_id
from transforms.experiments import ExperimentControl, is_experiment_control, validate_experiment_control

MAX_TITLE_LENGTH = 512
MAX_TAGS = 64
MAX_TAG_LENGTH = 64
CATEGORY_SEPARATOR = "/"
# The one rule for category names, which become parts of Redis keys (trending by
# top category) and query parameters: a path of at most 8 segments joined by
# "/", each 1-128 characters of printable text ("Children's", "Sci-Fi & Fantasy")
# without control characters or the glob metacharacters * ? [ ] \, so no
# category can act as a key pattern or split a log line.  Spelled once as a
# regex both Python and pydantic (the API's query schema) understand.
CATEGORY_SEGMENT_REGEX = r"[^\x00-\x1f\x7f-\x9f*?\[\]\\/]{1,128}"
CATEGORY_PATH_REGEX = rf"{CATEGORY_SEGMENT_REGEX}(?:/{CATEGORY_SEGMENT_REGEX}){{0,7}}"
_CATEGORY_SEGMENT = re.compile(CATEGORY_SEGMENT_REGEX)
_CATEGORY_PATH = re.compile(CATEGORY_PATH_REGEX)
CATEGORY_RULE = "category must be a path of at most 8 '/'-separated parts, each 1-128 printable chars without * ? [ ] \\"


def valid_category(value: object) -> bool:
    """True when ``value`` is a usable category path (``"fashion/shoes"``); see :data:`CATEGORY_PATH_REGEX`."""
    return isinstance(value, str) and _CATEGORY_PATH.fullmatch(value) is not None


def valid_top_category(value: object) -> bool:
    """True when ``value`` is one segment of a valid category path (what a trending key is made of)."""
    return isinstance(value, str) and _CATEGORY_SEGMENT.fullmatch(value) is not None


@dataclass(frozen=True)
class CatalogItem:
    """One sellable item.

    ``category`` is a path such as ``"fashion/shoes/running"``; its first
    segment is the top-level category used for trending and diversity.
    ``ts`` is when this version of the item takes effect (epoch ms).
    """

    item_id: str
    title: str = ""
    category: str = ""
    brand: str = ""
    price: float = math.nan
    tags: tuple[str, ...] = field(default_factory=tuple)
    created_at: int = 0
    in_stock: bool = True
    ts: int = 0
    # The ad slot: a sponsored item's cost per click, its campaign ("" = none) and the
    # campaign's daily budget (NaN = no cap).
    sponsored: bool = False
    bid: float = 0.0
    campaign: str = ""
    budget: float = math.nan

    @property
    def top_category(self) -> str:
        return self.category.split(CATEGORY_SEPARATOR, 1)[0] if self.category else ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "item_id": self.item_id,
            "title": self.title,
            "category": self.category,
            "brand": self.brand,
            "tags": list(self.tags),
            "created_at": self.created_at,
            "in_stock": self.in_stock,
            "ts": self.ts,
        }
        if not math.isnan(self.price):
            out["price"] = self.price
        if self.sponsored or self.bid or self.campaign or not math.isnan(self.budget):
            out["sponsored"] = self.sponsored
            out["bid"] = self.bid
            if self.campaign:
                out["campaign"] = self.campaign
            if not math.isnan(self.budget):
                out["budget"] = self.budget
        return out

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


@dataclass(frozen=True)
class EmbeddingSwitch:
    """Serve the learned embeddings of the export version directory ``path`` for lists scored after ``ts``.

    ``path`` names one version (``<root>/<version>``, see
    :mod:`state.embeddings`), never a root, so every engine that reads the
    record loads the same vectors whenever it reads it.
    """

    path: str
    ts: int

    def to_dict(self) -> dict[str, Any]:
        return {"embeddings": self.path, "ts": self.ts}


MAX_PATH_LENGTH = 4096


def validate_embedding_switch(rec: Mapping[str, Any], raw: Any = None) -> tuple[EmbeddingSwitch | None, Rejection | None]:
    """Check an ``{"embeddings": PATH, "ts": T}`` control record."""
    raw = rec if raw is None else raw
    path = rec.get("embeddings")
    if set(rec) - {"embeddings", "ts"}:
        return None, _reject("bad_field", "an embeddings record has only the fields embeddings and ts", raw)
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_LENGTH or "\x00" in path:
        return None, _reject("bad_field", f"embeddings must be the path of an export version (1-{MAX_PATH_LENGTH} chars)", raw)
    ts = _as_int_ts(rec.get("ts"))
    if ts is None or not 0 <= ts <= MAX_TS_MS:
        return None, _reject("bad_timestamp", "ts must be epoch milliseconds before 2100-01-01", raw)
    return EmbeddingSwitch(path=path, ts=ts), None


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def validate_catalog_record(rec: Any, raw: Any = None) -> tuple[CatalogItem | None, Rejection | None]:
    """Check one decoded catalog record; return the item or a rejection with its reason."""
    raw = rec if raw is None else raw
    if not isinstance(rec, Mapping):
        return None, _reject("not_an_object", "a catalog item must be a JSON object", raw)
    item_id = rec.get("item_id")
    if isinstance(item_id, int) and not isinstance(item_id, bool):
        item_id = str(item_id)
    if not valid_id(item_id):
        return None, _reject("bad_id", "item_id must be 1-128 chars of [A-Za-z0-9_.:@-]", raw)
    strings = {}
    for name in ("title", "category", "brand"):
        value = rec.get(name) or ""
        if not isinstance(value, str) or len(value) > MAX_TITLE_LENGTH:
            return None, _reject("bad_field", f"{name} must be a string of at most {MAX_TITLE_LENGTH} chars", raw)
        strings[name] = value
    if strings["category"] and not valid_category(strings["category"]):
        return None, _reject("bad_category", CATEGORY_RULE, raw)
    price = rec.get("price")
    if price is None:
        price = math.nan
    elif isinstance(price, bool) or not isinstance(price, (int, float)) or not _finite(price) or price < 0:
        return None, _reject("bad_field", "price must be a finite number >= 0", raw)
    tags = rec.get("tags") or []
    if isinstance(tags, str):
        tags = [t for t in tags.split(",") if t]
    if not isinstance(tags, list) or len(tags) > MAX_TAGS or not all(isinstance(t, str) and len(t) <= MAX_TAG_LENGTH for t in tags):
        return None, _reject("bad_field", f"tags must be a list of at most {MAX_TAGS} strings of at most {MAX_TAG_LENGTH} chars", raw)
    created_at = _as_int_ts(rec.get("created_at", 0))
    ts = _as_int_ts(rec.get("ts", created_at or 0))
    if created_at is None or ts is None:
        return None, _reject("bad_timestamp", "created_at and ts must be epoch milliseconds", raw)
    if not (0 <= created_at <= MAX_TS_MS and 0 <= ts <= MAX_TS_MS):
        return None, _reject("timestamp_out_of_range", "created_at and ts must be epoch ms before 2100-01-01", raw)
    in_stock = rec.get("in_stock", True)
    if not isinstance(in_stock, bool):
        return None, _reject("bad_field", "in_stock must be true or false", raw)
    ads, rejection = _sponsorship_fields(rec, raw)
    if rejection is not None:
        return None, rejection
    return (
        CatalogItem(
            item_id=item_id,
            title=strings["title"],
            category=strings["category"],
            brand=strings["brand"],
            price=float(price),
            tags=tuple(tags),
            created_at=created_at,
            in_stock=in_stock,
            ts=ts,
            **ads,
        ),
        None,
    )


def _number_at_least_zero(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and _finite(value) and value >= 0


def _sponsorship_fields(rec: Mapping[str, Any], raw: Any) -> tuple[dict[str, Any], Rejection | None]:
    """The ad-slot fields of a catalog record (``sponsored``, ``bid``, ``campaign``, ``budget``), checked."""
    sponsored = rec.get("sponsored", False)
    if not isinstance(sponsored, bool):
        return {}, _reject("bad_sponsorship", "sponsored must be true or false", raw)
    bid = rec.get("bid", 0.0)
    if bid is None:
        bid = 0.0
    if not _number_at_least_zero(bid):
        return {}, _reject("bad_sponsorship", "bid must be a finite number >= 0 (cost per click)", raw)
    campaign = rec.get("campaign") or ""
    if campaign and not valid_id(campaign):
        return {}, _reject("bad_sponsorship", "campaign must be 1-128 chars of [A-Za-z0-9_.:@-]", raw)
    budget = rec.get("budget")
    if budget is None:
        budget = math.nan
    elif not _number_at_least_zero(budget):
        return {}, _reject("bad_sponsorship", "budget must be a finite number >= 0 (the campaign's daily budget)", raw)
    elif not campaign:
        return {}, _reject("bad_sponsorship", "budget is a campaign's daily budget: give the campaign too", raw)
    return {"sponsored": sponsored, "bid": float(bid), "campaign": campaign, "budget": float(budget)}, None


def parse_catalog_lines(
    lines: Iterable[bytes | str], switches: list[EmbeddingSwitch | ExperimentControl] | None = None
) -> tuple[list[CatalogItem], list[Rejection]]:
    """Parse catalog JSON lines into items and rejections (never raises for bad input).

    Control records (embedding switches, experiment controls) are appended to
    ``switches`` in input order when the caller passes a list (the job's
    catalog input); elsewhere they are rejected like any record without an
    ``item_id``.
    """
    items, rejections = [], []
    for line in lines:
        data = line.encode("utf-8", errors="surrogatepass") if isinstance(line, str) else line
        if not data.strip():
            continue
        if len(data) > MAX_RECORD_BYTES:
            rejections.append(_reject("too_large", f"record is over {MAX_RECORD_BYTES} bytes", data))
            continue
        try:
            rec = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            reason = "not_utf8" if "utf-8" in str(exc).lower() else "bad_json"
            rejections.append(_reject(reason, str(exc)[:200], data))
            continue
        if switches is not None and isinstance(rec, Mapping) and "embeddings" in rec:
            switch, rejection = validate_embedding_switch(rec, raw=data)
            if switch is not None:
                switches.append(switch)
            else:
                rejections.append(rejection)
            continue
        if switches is not None and is_experiment_control(rec):
            control, rejection = validate_experiment_control(rec, raw=data)
            if control is not None:
                switches.append(control)
            else:
                rejections.append(rejection)
            continue
        item, rejection = validate_catalog_record(rec, raw=data)
        if item is not None:
            items.append(item)
        else:
            rejections.append(rejection)
    return items, rejections


class Catalog:
    """The current version of every item, updated by upserts in time order."""

    def __init__(self, items: Iterable[CatalogItem] = ()) -> None:
        self._items: dict[str, CatalogItem] = {}
        for item in items:
            self.upsert(item)

    def upsert(self, item: CatalogItem) -> None:
        self._items[item.item_id] = item

    def get(self, item_id: str) -> CatalogItem | None:
        return self._items.get(item_id)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(self._items.values())

    def top_category(self, item_id: str) -> str:
        item = self._items.get(item_id)
        return item.top_category if item else ""

    def category(self, item_id: str) -> str:
        item = self._items.get(item_id)
        return item.category if item else ""

    def in_stock(self, item_id: str) -> bool:
        item = self._items.get(item_id)
        return item.in_stock if item else True

    def with_stock(self, item_id: str, in_stock: bool) -> None:
        item = self._items.get(item_id)
        if item is not None:
            self._items[item_id] = replace(item, in_stock=in_stock)
