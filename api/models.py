"""Schemas of the API's bodies, for the OpenAPI document (/openapi.json, /docs).

Handlers build their JSON with orjson directly (the hot path does not pay for
pydantic serialisation); these models describe that JSON.  Request bodies are
validated record by record with the job's own rules (:mod:`transforms.events`,
:mod:`transforms.catalog`), so one bad record in a batch is reported, not fatal;
the request schemas here document those rules.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from transforms.catalog import CATEGORY_PATH_REGEX, MAX_TAGS, MAX_TITLE_LENGTH
from transforms.events import EVENT_TYPES, MAX_IMPRESSION_ITEMS, MAX_POSITION, MAX_QUANTITY, MAX_QUERY_LENGTH, MAX_REC_ID_LENGTH, MAX_TS_MS, MIN_TS_MS, REC_ID_PATTERN

# Same rule as transforms.events.ID_PATTERN, spelled for OpenAPI/pydantic.
ID_REGEX = r"^[A-Za-z0-9_.:@\-]{1,128}$"
# A category path: the catalog's one rule (transforms.catalog.valid_category).
CATEGORY_REGEX = f"^{CATEGORY_PATH_REGEX}$"
MAX_CATEGORY_CHARS = 512

Context = Literal["home", "cart", "item", "search", "ads"]
EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]


class ReasonOut(BaseModel):
    """Why the item is here, as data to translate: fill the shop's template for `code` (and `note`)."""

    code: str = Field(description="what kind of reason, e.g. 'because_you_viewed', 'goes_with', 'trending_in' (transforms/reasons.py lists them all)")
    item: str | None = Field(None, description="the item the reason names (the one viewed, in the cart, ...)")
    category: str | None = Field(None, description="the category the reason names")
    note: str | None = Field(None, description="an extra remark, e.g. 'no_history', 'matches_interest_in'")


REC_ID_FIELD = Field(
    description="id of this response's list: send it back with the `impression` event that reports the list was shown "
    "(and with clicks, carts and purchases on its items), so they are attributed to it; unique per response"
)


class ScoredItemOut(BaseModel):
    item: str = Field(description="item id")
    score: float = Field(description="ranking score (higher first); comparable within one response only")
    reason: str | None = Field(None, description="why the item is here in English, e.g. 'because you viewed i000123', 'trending in fashion'")
    why: ReasonOut | None = Field(None, description="the same reason as structured fields, for localised texts")


class AdItemOut(ScoredItemOut):
    """A sponsored item (context=ads): ``score`` is relevance x bid."""

    campaign: str | None = Field(None, description="the item's campaign (null: none)")
    bid: float = Field(description="the item's cost per click now")
    relevance: float = Field(description="the user's score for the item over their best item's score (cold start: trending over the top trending item)")


class RecommendationsOut(BaseModel):
    user_id: str
    context: Context
    ts: int = Field(description="event time (epoch ms) of the newest list used; 0 when none")
    cold_start: bool = Field(description="true when the user has no history yet and trending was served instead")
    rec_id: str = REC_ID_FIELD
    items: list[ScoredItemOut | AdItemOut]
    empty_reason: str | None = Field(None, description="context=ads with no items: why (no_sponsored_items, none_relevant, budgets_spent)")


class SimilarOut(BaseModel):
    item_id: str
    ts: int = Field(description="event time (epoch ms) of the neighbour lists; 0 when none")
    rec_id: str = REC_ID_FIELD
    items: list[ScoredItemOut]


class TrendingOut(BaseModel):
    category: str | None = Field(description="the category asked for, or null for global trending")
    ts: int
    rec_id: str = REC_ID_FIELD
    items: list[ScoredItemOut]


class EventIn(BaseModel):
    """One shopper action (the job's event schema).

    An `impression` reports a list that was shown: its `rec_id`, the shown `items` and their
    `positions` (0-based; default 0, 1, ...); the job stores it as one row per shown item.
    Clicks, carts and purchases on a recommended item may carry the list's `rec_id` and the
    item's `position`, so the job attributes them to that list.
    """

    user_id: str = Field(pattern=ID_REGEX, max_length=128)
    item_id: str | None = Field(None, pattern=ID_REGEX, max_length=128, description="required except for 'forget' events and impressions that list `items`")
    event_type: EventType  # type: ignore[valid-type]
    ts: int | None = Field(None, ge=MIN_TS_MS, le=MAX_TS_MS, description="event time, epoch ms; the server's receive time when omitted; at most 5 minutes ahead of the server clock")
    session_id: str | None = Field(None, pattern=ID_REGEX, max_length=128)
    quantity: float | None = Field(None, ge=1, le=MAX_QUANTITY)
    price: float | None = Field(None, ge=0)
    rating: float | None = Field(None, description="required for 'rating' events")
    query: str | None = Field(None, max_length=MAX_QUERY_LENGTH)
    rec_id: str | None = Field(None, pattern=f"^{REC_ID_PATTERN.pattern}$", max_length=MAX_REC_ID_LENGTH, description="the `rec_id` of the list the event is about (required for impressions)")
    items: list[str] | None = Field(None, min_length=1, max_length=MAX_IMPRESSION_ITEMS, description="impressions only: the shown item ids, each once")
    positions: list[int] | None = Field(None, description=f"impressions only: each shown item's position (0-{MAX_POSITION}), as long as `items`")
    position: int | None = Field(None, ge=0, le=MAX_POSITION, description="the item's position in the list `rec_id` names")


class CatalogItemIn(BaseModel):
    """One catalog upsert (replaces the item's previous version)."""

    item_id: str = Field(pattern=ID_REGEX, max_length=128)
    title: str = Field("", max_length=MAX_TITLE_LENGTH)
    category: str = Field("", max_length=MAX_TITLE_LENGTH, pattern=f"^$|{CATEGORY_REGEX}", description="path such as 'fashion/shoes/running': at most 8 parts, each 1-128 printable chars without * ? [ ] \\")
    brand: str = Field("", max_length=MAX_TITLE_LENGTH)
    price: float | None = Field(None, ge=0)
    tags: list[str] = Field(default_factory=list, max_length=MAX_TAGS)
    created_at: int = Field(0, ge=0, le=MAX_TS_MS)
    in_stock: bool = True
    ts: int | None = Field(None, ge=0, le=MAX_TS_MS, description="when this version takes effect, epoch ms; the server's receive time when omitted")
    sponsored: bool = Field(False, description="shown in the ad slot (context=ads) when true")
    bid: float = Field(0.0, ge=0, description="cost per click of a sponsored item (what a click on its ad spends)")
    campaign: str | None = Field(None, pattern=ID_REGEX, max_length=128, description="the campaign the item's spend counts towards")
    budget: float | None = Field(None, ge=0, description="the campaign's daily budget (needs campaign); its items leave the ad slot once a day's spend reaches it")


class RejectionOut(BaseModel):
    index: int = Field(description="position of the record in the request (0 for a single object)")
    reason: str = Field(description="machine-readable reason, e.g. bad_id, missing_field, timestamp_out_of_range")
    detail: str


class IngestOut(BaseModel):
    accepted: int
    rejected: int
    rejections: list[RejectionOut] = Field(description="the first 100 rejections")


class ForgetOut(BaseModel):
    user_id: str
    deleted_keys: int = Field(description="per-user Redis keys removed now")
    forget_queued: bool = Field(description="a forget event was written for the job, which clears the user's state")


class StatsOut(BaseModel):
    now_ms: int = Field(description="the server's clock, epoch ms")
    freshness_ms: int | None = Field(description="now_ms - last_window_ts: how far the job's newest closed window is behind")
    counters: dict[str, int | float | str] = Field(description="the job's counters (events, dead_letters, late_events, windows, last_window_ts, ...)")


class LiveSeriesTotalsOut(BaseModel):
    impressions: float
    clicks: float
    carts: float
    purchases: float
    revenue: float
    choices: float
    hits: float
    ctr: float | None
    conversion: float | None
    hit_rate: float | None


class LiveSeriesOut(BaseModel):
    """One experiment x variant x context: a value per minute of `minute_starts` (rates null where their denominator is 0)."""

    experiment: str = Field(description="experiment name, '~' for users in no experiment")
    variant: str
    context: str = Field(description="where the list was shown; 'all' sums the variant's contexts")
    impressions: list[float]
    clicks: list[float]
    carts: list[float]
    purchases: list[float]
    revenue: list[float]
    choices: list[float] = Field(description="outcomes attributed to the user's latest impression (live HR denominator)")
    hits: list[float] = Field(description="choices of an item that impression showed")
    ctr: list[float | None] = Field(description="clicks / impressions")
    conversion: list[float | None] = Field(description="purchases / impressions")
    hit_rate: list[float | None] = Field(description="hits / choices (live HR@k)")
    totals: LiveSeriesTotalsOut = Field(description="the counts summed over the minutes, and their rates")


class LiveOpsOut(BaseModel):
    """The job's own numbers; per-minute lists follow `minute_starts` here (processing time by the API clock)."""

    minute_starts: list[int]
    events: list[int]
    late_events: list[int]
    dead_letters: list[int]
    events_per_s: list[float | None] = Field(description="events of a minute over its 60 s (over the seconds passed for the current one)")
    totals: dict[str, int] = Field(description="cumulative counters: events, late_events, dead_letters")
    dead_letter_reasons: dict[str, int] = Field(description="cumulative dead letters by reason")
    last_window_ts: int | None = Field(description="end of the job's newest closed window (event time)")
    freshness_ms: int | None = Field(description="now_ms - last_window_ts")
    freshness_p50_ms: float | None = Field(description="median of the newest recorded event -> list lags (null unless the job records them: record_freshness)")
    freshness_p99_ms: float | None
    freshness_samples: int = Field(description="how many recorded lags the percentiles are over")


class LiveMetricsOut(BaseModel):
    now_ms: int = Field(description="the server's clock, epoch ms")
    minutes: int
    anchor: Literal["clock", "job"] = Field(description="what the minutes end with: the API clock, or the job's newest closed window")
    experiment: str | None
    minute_starts: list[int] = Field(description="epoch-ms starts of the minutes (event time), oldest first")
    series: list[LiveSeriesOut]
    ops: LiveOpsOut


class CatalogPageOut(BaseModel):
    total: int
    offset: int
    items: list[dict[str, Any]]


class CategoryCountOut(BaseModel):
    category: str
    items: int


class ProblemOut(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem documents for the given statuses."""
    return {status: {"model": ProblemOut, "content": {"application/problem+json": {}}, "description": "problem details"} for status in statuses}


def json_body_schema(model: type[BaseModel], max_items: int) -> dict[str, Any]:
    """OpenAPI request body: one ``model`` object or an array of up to ``max_items`` of them."""
    schema = model.model_json_schema()
    schema.pop("title", None)
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"oneOf": [schema, {"type": "array", "items": schema, "minItems": 1, "maxItems": max_items}]}}},
        }
    }
