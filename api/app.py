"""The lookup and ingest HTTP API: a thin FastAPI app over the lists the job keeps in Redis.

Reads (recommendations, similar items, trending) fetch every key a request
needs with one ``MGET`` on a pipelined asyncio Redis connection
(:mod:`api.redisconn`), then do at most a small blend (:mod:`api.ranking`);
the model is never recomputed in a request.  A few less common paths need a
second round trip (a category filter or the item-context taste boost need the
candidates' catalog entries; cart complements computed from a raw cart need
its items' neighbours).  The plainest home-list request, nearly all traffic,
skips FastAPI's parameter handling (:class:`api.middleware.HomeListShortcut`)
but runs the same lookup function as its route.

Writes (events, catalog upserts, forgetting a user) are validated with the
job's rules (:mod:`api.ingest`) and handed to the live job as new files in its
spool directory (:mod:`api.spool`).  They need a bearer key; with no key
configured they are refused, never open.

Build the app with :func:`create_app`; ``flowrec serve`` runs it on uvicorn.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import importlib.resources
import inspect
import logging
import os
import re
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Awaitable, Callable, Sequence

import anyio.to_thread
import orjson
from fastapi import Depends, FastAPI, Path as PathParam, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, Response

from api import models
from api.ads import AdsLookup
from api.browse import BrowseCatalog
from api.dashboard import add_dashboard_routes
from api.experiments import ExperimentDirectory, add_experiment_routes
from api.ingest import MAX_RECORDS_PER_REQUEST, RecordRejection, forget_event_line, spool_lines, validate_catalog, validate_events
from api.middleware import ApiMetrics, BodyLimitMiddleware, HomeListShortcut, MetricsMiddleware, SecurityHeadersMiddleware
from api.problems import ApiProblem, install_problem_handlers, problem_response
from api.recmetrics import attribution_exposition
from api.ranking import (
    COLD_START_NOTE,
    BlendWeights,
    blend_neighbours,
    boost_by_taste,
    in_category,
    rerank_candidates,
    take,
    top_category,
    top_up,
    trending_reason,
    with_reason,
)
from api.recids import ANONYMOUS, Assignment, RecIdIssuer, VariantOf, stored_assignment
from api.redisconn import PipelinedRedis
from api.security import SECURITY_HEADERS, FailedAuthThrottle, page_headers
from api.spool import spool_unwritable_reason, write_spool_file
from flowrec.config import Settings, load_settings
from state.experiments import read_experiment_records
from state.keys import KeyKind, redis_key
from state.store import RedisStore, RetryPolicy, ScoredItem, Write, decode_list
from transforms.catalog import CatalogItem, valid_category
from transforms.complements import cart_complements, goes_with, ranked as ranked_complements
from transforms.events import valid_id

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
# A request's whole body must arrive within this many seconds of its start (408 after).
BODY_TIMEOUT_S = 30.0
# Ids accepted in `exclude=` / `ids=` and in `candidates=` (search re-ranking).
MAX_LISTED_IDS = 100
MAX_CANDIDATES = 200
# Cart items whose neighbours are fetched when the job has no cart list yet.
MAX_CART_ITEMS = 50
MAX_REJECTIONS_SHOWN = 100
# Characters of a comma-separated id list: MAX ids of 128 chars plus commas.
_ID_LIST_CHARS = MAX_CANDIDATES * 129
STATIC_DIR = Path(__file__).resolve().parent / "static"
# Swagger UI's files for /docs ship in the fastapi-offline package and are served from here.
DOCS_STATIC_PATH = "/docs/static"
_CONFIG_PLACEHOLDER = "/*FLOWREC_DEMO_CONFIG*/null"

JSON = "application/json"
# Media types a write endpoint's body may be declared as (415 otherwise).
_JSON_MEDIA_TYPE = re.compile(r"^\s*application/(?:[\w.+-]+\+)?json\s*(?:;.*)?$", re.IGNORECASE)
# Catalog upserts and user deletions are not retried, like reads: a retry would run past the
# request's Redis deadline, and both are idempotent, so the client retries after the 503.
WRITE_RETRY = RetryPolicy(attempts=1)
RECOMMENDATIONS_PATH = "/v1/users/{user_id}/recommendations"


def wall_clock_ms() -> int:
    """The real clock, epoch milliseconds (the default ``clock_ms`` of :func:`create_app`)."""
    return time.time_ns() // 1_000_000


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON)


def _items_out(items: Sequence[ScoredItem]) -> list[dict[str, Any]]:
    return [i.to_dict() for i in items]


def stored_list(raw: bytes | None, what: str) -> tuple[int, list[ScoredItem], dict[str, Any]]:
    """:func:`state.store.decode_list`, but a corrupt value reads as absent (logged), never a 500."""
    try:
        return decode_list(raw)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        log.warning("ignoring unreadable %s value: %s", what, exc)
        return 0, [], {}


def fast_home_body(user_id: str, raw: bytes, n: int, rec_ids: RecIdIssuer) -> bytes | None:
    """The home response straight from the stored list's bytes, when its first ``n`` items are all needed.

    Parses with orjson and re-emits the stored item objects as they are (no
    per-item objects); ``None`` when the list is shorter than ``n`` (it needs
    a top-up) or unreadable, so the general path decides.  The rec_id carries
    the experiment variant recorded in the list (the one that computed it);
    a list that records none is left to the general path too.
    """
    try:
        data = orjson.loads(raw)
        items = data["items"]
        ts = int(data["ts"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if not isinstance(items, list) or len(items) < n:
        return None
    assignment = stored_assignment(data)
    if assignment is None:  # a list from before experiments: the user's assignment needs a lookup
        return None
    rec_id = rec_ids.mint(user_id, "home", assignment)
    return orjson.dumps({"user_id": user_id, "context": "home", "ts": ts, "cold_start": False, "rec_id": rec_id, "items": items[:n]})


def parse_id_list(text: str | None, what: str, limit: int) -> list[str]:
    """Comma-separated ids, each checked like a path id; at most ``limit``, duplicates dropped."""
    if not text:
        return []
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if len(ids) > limit:
        raise ApiProblem(422, "validation", f"query parameter '{what}': at most {limit} ids")
    for value in ids:
        if not valid_id(value):
            raise ApiProblem(422, "validation", f"query parameter '{what}': {value[:40]!r} is not a valid id (1-128 chars of [A-Za-z0-9_.:@-])")
    return list(dict.fromkeys(ids))


def _id_strings(values: Any) -> list[str]:
    """Valid ids from a profile field that should be a list of ids (anything else is ignored)."""
    if not isinstance(values, list):
        return []
    return [v for v in values if valid_id(v)]


def _number_map(values: Any) -> dict[str, float]:
    if not isinstance(values, dict):
        return {}
    return {str(k): float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class Lookups:
    """Reads over one pipelined Redis connection (:mod:`api.redisconn`), opened in the app's lifespan.

    ``read_client(url, deadline_s)`` makes the client; anything with the
    ``mget``/``get``/``hgetall``/``hmget``/``ping``/``aclose`` coroutines of
    ``redis.asyncio.Redis`` will do (``flowrec bench api`` compares one).
    """

    def __init__(self, url: str, namespace: str, deadline_s: float, read_client: Callable[[str, float], Any] = PipelinedRedis) -> None:
        self.url = url
        self.namespace = namespace
        self.deadline_s = deadline_s
        self.read_client = read_client
        self.client: Any = None
        self._singletons: dict[KeyKind, str] = {}

    async def open(self) -> None:
        self.client = self.read_client(self.url, self.deadline_s)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    def key(self, kind: KeyKind, part: str | None = None) -> str:
        if part is None:
            # Singleton keys (global trending, stats) never change: built once by redis_key.
            key = self._singletons.get(kind)
            if key is None:
                key = self._singletons[kind] = redis_key(kind, None, self.namespace)
            return key
        return redis_key(kind, part, self.namespace)

    async def mget(self, keys: Sequence[tuple[KeyKind, str | None]]) -> list[bytes | None]:
        if not keys:
            return []
        return await self.client.mget([self.key(kind, part) for kind, part in keys])

    async def get(self, kind: KeyKind, part: str | None = None) -> bytes | None:
        return await self.client.get(self.key(kind, part))

    async def categories(self, items: Sequence[str]) -> dict[str, str]:
        """``{item: category}`` from the catalog entries in Redis (missing or unreadable -> "")."""
        ids = list(dict.fromkeys(items))
        raws = await self.mget([(KeyKind.ITEM, i) for i in ids])
        return {item: _category_of(raw) for item, raw in zip(ids, raws)}

    async def stats(self) -> dict[bytes, bytes]:
        return await self.client.hgetall(self.key(KeyKind.STATS))

    async def hmget(self, kind: KeyKind, part: str | None, fields: Sequence[str]) -> list[bytes | None]:
        return await self.client.hmget(self.key(kind, part), list(fields)) if fields else []

    async def ping(self) -> bool:
        return bool(await self.client.ping())


def _category_of(raw: bytes | None) -> str:
    """The category of a stored catalog entry; "" when absent, unreadable or not a valid category
    (an entry stored before the rule existed must not turn a lookup into an error)."""
    if raw is None:
        return ""
    try:
        category = orjson.loads(raw).get("category", "")
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    return category if valid_category(category) else ""


def _stat_value(raw: bytes) -> int | float | str:
    text = raw.decode("utf-8", errors="replace")
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@dataclass
class ApiContext:
    """Everything the handlers share; built once by :func:`create_app`."""

    settings: Settings
    store: RedisStore
    lookups: Lookups
    clock_ms: Callable[[], int]
    catalog: BrowseCatalog
    metrics: ApiMetrics
    weights: BlendWeights
    demo_key: str | None
    rec_ids: RecIdIssuer
    key_digests: tuple[bytes, ...] = field(default=())
    owns_store: bool = False
    # Readiness wants this much free space in the spool: the largest request body.
    max_body_bytes: int = MAX_BODY_BYTES
    # The home-list lookup, shared by its route and the hot-path shortcut (set when routes are added).
    home_body: Callable[[str, int, str | None, set[str]], Awaitable[bytes]] | None = None
    # Wrong write keys per client address (built by create_app on its clock).
    auth_throttle: FailedAuthThrottle | None = None
    # The running experiment: each user's variant for request-time lists (built by create_app).
    experiments: ExperimentDirectory | None = None


def _digest(key: str) -> bytes:
    # Comparing fixed-length digests keeps even the key's length out of the timing.
    return hashlib.sha256(key.encode("utf-8")).digest()


def create_app(
    settings: Settings,
    store: RedisStore | None = None,
    clock_ms: Callable[[], int] = wall_clock_ms,
    catalog: BrowseCatalog | None = None,
    demo_key: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    read_client: Callable[[str, float], Any] = PipelinedRedis,
    home_shortcut: bool = True,
    body_timeout_s: float = BODY_TIMEOUT_S,
    variant_of: VariantOf | None = None,
) -> FastAPI:
    """The API as an ASGI app.

    ``settings.redis_url`` is required (reads use their own pipelined connection to it);
    ``store`` (default: one on the same URL) does the writes.  ``clock_ms`` is
    the only time source of the handlers.  ``catalog`` feeds the browse
    endpoints and the demo page.  ``demo_key``, when given, is accepted as a
    write key and injected into the demo page (``flowrec serve --demo`` only).
    ``read_client`` and ``home_shortcut`` exist for ``flowrec bench api``, which
    compares the API without its hand-written client and hot-path shortcut.
    ``variant_of(user, context)`` is the user's current ``(experiment, variant)``
    for the rec_ids of lists computed at request time (default: the running
    experiment the job applied, :class:`api.experiments.ExperimentDirectory`).
    """
    if not settings.redis_url:
        raise ValueError("the API needs settings.redis_url (--redis-url or REDIS_URL)")
    owns_store = store is None
    deadline_s = settings.redis_deadline_ms / 1000
    if store is None:
        # Writes get the reads' deadline: a request answers 503 within about redis_deadline_ms
        # rather than wait out the job sink's long timeouts and retry schedule.
        import redis

        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=deadline_s, socket_timeout=deadline_s, health_check_interval=30)
        store = RedisStore(client, namespace=settings.namespace, retry=WRITE_RETRY)
    keys = tuple(settings.api_keys) + ((demo_key,) if demo_key else ())
    ctx = ApiContext(
        settings=settings,
        store=store,
        lookups=Lookups(settings.redis_url, store.namespace, deadline_s, read_client),
        clock_ms=clock_ms,
        catalog=catalog if catalog is not None else BrowseCatalog(),
        metrics=ApiMetrics(),
        weights=BlendWeights(cf=settings.model.weight_cf, content=settings.model.weight_content),
        demo_key=demo_key,
        rec_ids=RecIdIssuer(settings.rec_id_secret, clock_ms),
        key_digests=tuple(_digest(k) for k in keys if k),
        owns_store=owns_store,
        max_body_bytes=max_body_bytes,
        auth_throttle=FailedAuthThrottle(clock_ms),
        experiments=ExperimentDirectory(lambda: read_experiment_records(store.client, store.namespace), clock_ms),
    )
    ctx.rec_ids.variant_of = variant_of or ctx.experiments.variant_of
    if settings.spool_dir is not None:
        Path(settings.spool_dir).mkdir(parents=True, exist_ok=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await ctx.lookups.open()
        try:
            yield
        finally:
            await ctx.lookups.close()
            if ctx.owns_store:
                ctx.store.client.close()

    options: dict[str, Any] = {}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        # Newer FastAPI asks the global OpenTelemetry providers on every request whether to trace,
        # which costs ~10% of a lookup; the API's telemetry is its Prometheus /metrics.
        options["telemetry"] = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(
        title="flowrec API",
        version="1",
        summary="Real-time shop recommendations: lookups over the lists the Flink job keeps in Redis, and event ingest for the job.",
        lifespan=lifespan,
        # /docs is served below from local files; ReDoc (a second CDN page) is not offered.
        docs_url=None,
        redoc_url=None,
        # Starlette's slash redirects are absolute URLs built from the Host header (an open redirect):
        # a path with a stray "/" is a 404 instead.
        redirect_slashes=False,
        **options,
    )
    app.state.ctx = ctx
    install_problem_handlers(app)
    _add_read_routes(app, ctx)
    _add_write_routes(app, ctx)
    _add_ops_routes(app, ctx)
    _add_demo_routes(app, ctx)
    add_dashboard_routes(app, ctx)
    _add_docs_routes(app)
    # Middleware added last runs first: metrics, the body limits, the shortcut, security headers, then FastAPI.
    # (The shortcut and the body limits send their few answers with the security headers themselves,
    # which keeps a wrapper off the hot path.)
    recommendations_route = next(r for r in app.routes if getattr(r, "path", None) == RECOMMENDATIONS_PATH)
    app.add_middleware(SecurityHeadersMiddleware, headers=SECURITY_HEADERS)
    if home_shortcut:
        app.add_middleware(HomeListShortcut, home_body=ctx.home_body, route=recommendations_route)
    app.add_middleware(BodyLimitMiddleware, limit_bytes=max_body_bytes, timeout_s=body_timeout_s)
    app.add_middleware(MetricsMiddleware, metrics=ctx.metrics)
    return app


def freeze_startup_objects() -> None:
    """Move every object alive now (modules, the app, the catalog) out of the cyclic GC's sight.

    They live as long as the server process; left in place, each full
    collection walks them all, which stalls every request in flight for tens
    of milliseconds (the p99 of the lookup benchmark showed it).  Call once,
    after the app is built and before serving.
    """
    gc.collect()
    gc.freeze()


def create_app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory`` (multi-worker ``flowrec serve``): settings from the environment.

    Besides the usual ``FLOWREC_*`` settings it reads ``FLOWREC_CATALOG``
    (catalog file for browsing), ``FLOWREC_DEMO_KEY``, ``FLOWREC_MAX_BODY_BYTES`` and ``FLOWREC_BODY_TIMEOUT_S``.
    """
    settings = load_settings(None)
    catalog_path = os.environ.get("FLOWREC_CATALOG")
    catalog = BrowseCatalog.from_file(Path(catalog_path)) if catalog_path else None
    app = create_app(
        settings,
        catalog=catalog,
        demo_key=os.environ.get("FLOWREC_DEMO_KEY") or None,
        max_body_bytes=int(os.environ.get("FLOWREC_MAX_BODY_BYTES", MAX_BODY_BYTES)),
        body_timeout_s=float(os.environ.get("FLOWREC_BODY_TIMEOUT_S", BODY_TIMEOUT_S)),
    )
    freeze_startup_objects()
    return app


# -- parameters shared by several routes ------------------------------------------------

UserId = Annotated[str, PathParam(pattern=models.ID_REGEX, max_length=128, description="user id: 1-128 chars of [A-Za-z0-9_.:@-]")]
ItemId = Annotated[str, PathParam(pattern=models.ID_REGEX, max_length=128, description="item id: 1-128 chars of [A-Za-z0-9_.:@-]")]
Count = Annotated[int, Query(ge=1, le=100, description="how many items (1-100)")]
BearerCredentials = Annotated[
    HTTPAuthorizationCredentials | None,
    Depends(HTTPBearer(auto_error=False, description="API key from FLOWREC_API_KEYS (or the demo key of `flowrec serve --demo`)")),
]
# The shopper a list without a user in its path is shown to: its rec_id is bound to them (api.recids).
ViewerId = Annotated[
    str | None,
    Query(pattern=models.ID_REGEX, max_length=128, description="the shopper the list is shown to: its rec_id is bound to them, so their feedback on it can be attributed (default: anonymous, `~`)"),
]
CategoryFilter = Annotated[str | None, Query(pattern=models.CATEGORY_REGEX, max_length=models.MAX_CATEGORY_CHARS, description="category path, e.g. 'fashion' or 'fashion/shoes'; items in it or below it")]


def _add_read_routes(app: FastAPI, ctx: ApiContext) -> None:
    lookups = ctx.lookups
    weights = ctx.weights
    rec_ids = ctx.rec_ids

    def trend_key(category: str | None) -> tuple[KeyKind, str | None]:
        return (KeyKind.TRENDING_CATEGORY, top_category(category)) if category else (KeyKind.TRENDING_GLOBAL, None)

    async def only_in(items: list[ScoredItem], category: str | None) -> list[ScoredItem]:
        """Items whose catalog category is ``category`` or below it (one MGET of their entries)."""
        return (await narrowed(category, items))[0]

    async def narrowed(category: str | None, *lists: list[ScoredItem]) -> list[list[ScoredItem]]:
        """Each list narrowed to ``category`` and below, with one MGET of all their catalog entries."""
        everything = [i.item for items in lists for i in items]
        if not category or not everything:
            return list(lists)
        cats = await lookups.categories(everything)
        return [[i for i in items if in_category(cats.get(i.item, ""), category)] for items in lists]

    def deeper(category: str | None) -> bool:
        """True for a sub-category path, whose trending list (keyed by the top category) needs narrowing."""
        return bool(category) and category != top_category(category)

    async def trending_in(category: str | None) -> tuple[int, list[ScoredItem]]:
        """Trending for a category path (its top category's list, narrowed when the path is deeper)."""
        ts, items, _ = stored_list(await lookups.get(*trend_key(category)), "trending")
        if deeper(category):
            items = await only_in(items, category)
        return ts, items

    async def answer(user_id: str, context: str, ts: int, cold: bool, items: Sequence[ScoredItem], assignment: Assignment | None = None) -> Response:
        """A recommendations response; ``assignment`` is the stored list's variant (``None``: the user's current one)."""
        rec_id = await rec_ids.issue(user_id, context, assignment)
        return _json({"user_id": user_id, "context": context, "ts": ts, "cold_start": cold, "rec_id": rec_id, "items": _items_out(items)})

    async def home_body(user_id: str, n: int, category: str | None, skip: set[str]) -> bytes:
        """The home list (one MGET of the list and the trending list it falls back to / tops up from)."""
        raw_list, raw_trend = await lookups.mget([(KeyKind.USER_RECS, user_id), trend_key(category)])
        if raw_list is not None and not category and not skip:
            body = fast_home_body(user_id, raw_list, n, rec_ids)
            if body is not None:
                return body
        ts, personal, fields = stored_list(raw_list, "user list")
        trend_ts, trending, _ = stored_list(raw_trend, "trending")
        if deeper(category):
            personal, trending = await narrowed(category, personal, trending)
        elif category:
            personal = await only_in(personal, category)
        if raw_list is None:
            items = with_reason(take(trending, n, skip), trending_reason(category, COLD_START_NOTE))
            rec_id = await rec_ids.issue(user_id, "home")
            return orjson.dumps({"user_id": user_id, "context": "home", "ts": trend_ts, "cold_start": True, "rec_id": rec_id, "items": _items_out(items)})
        items = top_up(take(personal, n, skip), trending, n, skip, trending_reason(category))
        rec_id = await rec_ids.issue(user_id, "home", stored_assignment(fields))
        return orjson.dumps({"user_id": user_id, "context": "home", "ts": ts, "cold_start": False, "rec_id": rec_id, "items": _items_out(items)})

    ctx.home_body = home_body

    async def cart(user_id: str, n: int, category: str | None, skip: set[str]) -> Response:
        raw_cart, raw_profile, raw_trend = await lookups.mget([(KeyKind.COMPLEMENTS, user_id), (KeyKind.PROFILE, user_id), trend_key(category)])
        ts, precomputed, cart_fields = stored_list(raw_cart, "cart list")
        profile_ts, _, profile = stored_list(raw_profile, "profile")
        trend_ts, trending, _ = stored_list(raw_trend, "trending")
        in_cart = _id_strings(profile.get("cart"))
        avoid = skip | set(in_cart)
        if ctx.settings.model.exclude_purchased:
            avoid |= set(_id_strings(profile.get("purchased")))
        # The job's cart list names the variant that computed it; a list made here is the user's current variant's.
        assignment = stored_assignment(cart_fields) if precomputed else None
        if precomputed:
            items = take(precomputed, len(precomputed), avoid)
        elif in_cart:
            # The job has not scored this cart yet: the job's formula over the stored neighbour lists.
            cart_items = in_cart[:MAX_CART_ITEMS]
            raws = await lookups.mget([(kind, i) for kind in (KeyKind.ITEM_NEIGHBOURS, KeyKind.CONTENT_NEIGHBOURS) for i in cart_items])
            lists = [stored_list(raw, "neighbours")[1] for raw in raws]
            as_pairs = [([e.item for e in entries], [e.score for e in entries]) for entries in lists]
            k = len(cart_items)
            scores, sources = cart_complements(cart_items, dict(zip(cart_items, as_pairs[:k])), dict(zip(cart_items, as_pairs[k:])), weights.cf, weights.content)
            items = [ScoredItem(j, scores[j], goes_with(sources[j])) for j in ranked_complements(scores) if j not in avoid]
            ts = profile_ts
        else:
            items = []
        if deeper(category):
            items, trending = await narrowed(category, items, trending)
        elif category:
            items = await only_in(items, category)
        cold = raw_cart is None and raw_profile is None
        if not items:
            note = COLD_START_NOTE if cold else ("cart_empty" if not in_cart else "")
            return await answer(user_id, "cart", trend_ts, cold, with_reason(take(trending, n, avoid), trending_reason(category, note)))
        return await answer(user_id, "cart", ts, cold, top_up(items, trending, n, avoid, trending_reason(category)), assignment)

    async def item(user_id: str, n: int, anchor: str, category: str | None, skip: set[str]) -> Response:
        raw_cf, raw_content, raw_profile, raw_item = await lookups.mget(
            [(KeyKind.ITEM_NEIGHBOURS, anchor), (KeyKind.CONTENT_NEIGHBOURS, anchor), (KeyKind.PROFILE, user_id), (KeyKind.ITEM, anchor)]
        )
        cf_ts, cf, _ = stored_list(raw_cf, "neighbours")
        content_ts, content, _ = stored_list(raw_content, "content neighbours")
        _, _, profile = stored_list(raw_profile, "profile")
        cold = raw_profile is None
        avoid = skip | {anchor}
        if ctx.settings.model.exclude_purchased:
            avoid |= set(_id_strings(profile.get("purchased")))
        items = blend_neighbours(anchor, cf, content, weights, avoid)
        interests = _number_map(profile.get("categories"))
        if items and (interests or category):
            cats = await lookups.categories([i.item for i in items])
            if category:
                items = [i for i in items if in_category(cats.get(i.item, ""), category)]
            if interests:
                items = boost_by_taste(items, cats, interests, weights.taste)
        if items:
            return await answer(user_id, "item", max(cf_ts, content_ts), cold, items[:n])
        # A new item has no neighbours yet: trending in its category (or the one asked for).
        fallback_category = category or top_category(_category_of(raw_item)) or None
        trend_ts, trending = await trending_in(fallback_category)
        return await answer(user_id, "item", trend_ts, cold, with_reason(take(trending, n, avoid), trending_reason(fallback_category, "nothing_similar", item=anchor)))

    async def search(user_id: str, n: int, candidates: list[str], category: str | None, skip: set[str]) -> Response:
        raws = await lookups.mget([(KeyKind.PROFILE, user_id), (KeyKind.USER_RECS, user_id), (KeyKind.TRENDING_GLOBAL, None)] + [(KeyKind.ITEM, c) for c in candidates])
        profile_ts, interest_items, profile = stored_list(raws[0], "profile")
        list_ts, personal, _ = stored_list(raws[1], "user list")
        _, trending, _ = stored_list(raws[2], "trending")
        category_of = {c: _category_of(raw) for c, raw in zip(candidates, raws[3:])}
        cold = raws[0] is None and raws[1] is None
        kept = [c for c in candidates if c not in skip and (not category or in_category(category_of[c], category))]
        ranked = rerank_candidates(
            kept,
            weights.taste,
            item_interest={i.item: i.score for i in interest_items},
            category_of=category_of,
            category_interest=_number_map(profile.get("categories")),
            personal_list=personal,
            trending=trending,
            cold_start=cold,
        )
        return await answer(user_id, "search", max(profile_ts, list_ts), cold, ranked[:n])

    ads = AdsLookup(lookups, ctx.settings.model, rec_ids)

    @app.get(
        RECOMMENDATIONS_PATH,
        tags=["lookups"],
        response_model=None,
        responses={200: {"model": models.RecommendationsOut}, **models.problem_responses(404, 422, 503)},
        summary="A user's recommendations, with a reason per item",
    )
    async def recommendations(
        user_id: UserId,
        n: Count = 10,
        context: Annotated[models.Context, Query(description="home: the user's list; cart: complements for the cart; item: similar to item_id, blended with the user's taste; search: re-rank `candidates` by the user's interests; ads: sponsored items by relevance x bid (api/ads.py)")] = "home",
        item_id: Annotated[str | None, Query(pattern=models.ID_REGEX, max_length=128, description="the item being viewed (context=item)")] = None,
        category: CategoryFilter = None,
        exclude: Annotated[str | None, Query(max_length=_ID_LIST_CHARS, description=f"comma-separated item ids to leave out (at most {MAX_LISTED_IDS})")] = None,
        candidates: Annotated[str | None, Query(max_length=_ID_LIST_CHARS, description=f"comma-separated item ids in search order (context=search, at most {MAX_CANDIDATES})")] = None,
    ) -> Response:
        """Cold-start users (no history yet) get trending items, global or in `category`, and `reason` says so.
        A short list is topped up with trending items.  The common path (`context=home`) is one Redis round trip."""
        skip = set(parse_id_list(exclude, "exclude", MAX_LISTED_IDS))
        if context == "ads":
            return _json(await ads.body(user_id, n, category, skip, ctx.clock_ms()))
        if context == "home":
            return Response(await home_body(user_id, n, category, skip), media_type=JSON)
        if context == "cart":
            return await cart(user_id, n, category, skip)
        if context == "item":
            if item_id is None:
                raise ApiProblem(422, "validation", "context=item needs item_id (the item being viewed)")
            return await item(user_id, n, item_id, category, skip)
        wanted = parse_id_list(candidates, "candidates", MAX_CANDIDATES)
        if not wanted:
            raise ApiProblem(422, "validation", "context=search needs candidates (comma-separated item ids in search order)")
        return await search(user_id, n, wanted, category, skip)

    @app.get(
        "/v1/items/{item_id}/similar",
        tags=["lookups"],
        response_model=None,
        responses={200: {"model": models.SimilarOut}, **models.problem_responses(404, 422, 503)},
        summary="Items similar to an item (collaborative and content neighbours blended)",
    )
    async def similar(item_id: ItemId, n: Count = 10, user_id: ViewerId = None) -> Response:
        """`score = weight_cf * cf / max cf + weight_content * content / max content`.  An item with no
        neighbours yet gets trending items of its category; an item unknown everywhere is a 404."""
        raw_cf, raw_content, raw_item = await lookups.mget([(KeyKind.ITEM_NEIGHBOURS, item_id), (KeyKind.CONTENT_NEIGHBOURS, item_id), (KeyKind.ITEM, item_id)])
        cf_ts, cf, _ = stored_list(raw_cf, "neighbours")
        content_ts, content, _ = stored_list(raw_content, "content neighbours")
        items = blend_neighbours(item_id, cf, content, weights)[:n]
        ts = max(cf_ts, content_ts)
        if not items:
            if raw_item is None and raw_cf is None and raw_content is None:
                raise ApiProblem(404, "unknown-item", f"item {item_id!r} is not in the catalog and has no neighbours")
            category = top_category(_category_of(raw_item)) or None
            ts, trending = await trending_in(category)
            items = with_reason(take(trending, n, {item_id}), trending_reason(category, "new_item"))
        rec_id = await rec_ids.issue(user_id or ANONYMOUS, "similar")
        return _json({"item_id": item_id, "ts": ts, "rec_id": rec_id, "items": _items_out(items)})

    @app.get(
        "/v1/trending",
        tags=["lookups"],
        response_model=None,
        responses={200: {"model": models.TrendingOut}, **models.problem_responses(422, 503)},
        summary="Trending items, global or in a category",
    )
    async def trending(category: CategoryFilter = None, n: Count = 10, user_id: ViewerId = None) -> Response:
        ts, items = await trending_in(category)
        reason = trending_reason(category)
        items = [ScoredItem(i.item, i.score, i.reason or reason) for i in take(items, n)]
        rec_id = await rec_ids.issue(user_id or ANONYMOUS, "trending")
        return _json({"category": category, "ts": ts, "rec_id": rec_id, "items": _items_out(items)})

    @app.get(
        "/v1/items/{item_id}",
        tags=["catalog"],
        response_model=None,
        responses={200: {"model": models.CatalogItemIn, "description": "the item's current catalog entry"}, **models.problem_responses(404, 422, 503)},
        summary="One catalog item (from Redis, the source of truth)",
    )
    async def get_item(item_id: ItemId) -> Response:
        raw = await lookups.get(KeyKind.ITEM, item_id)
        if raw is None:
            raise ApiProblem(404, "unknown-item", f"item {item_id!r} is not in the catalog")
        return Response(raw, media_type=JSON)

    @app.get(
        "/v1/items",
        tags=["catalog"],
        response_model=None,
        responses={200: {"description": "`{\"items\": {item_id: entry or null}}`"}, **models.problem_responses(422, 503)},
        summary="Several catalog items at once (for rendering a list)",
    )
    async def get_items(ids: Annotated[str, Query(max_length=_ID_LIST_CHARS, description=f"comma-separated item ids (at most {MAX_LISTED_IDS})")]) -> Response:
        wanted = parse_id_list(ids, "ids", MAX_LISTED_IDS)
        raws = await lookups.mget([(KeyKind.ITEM, i) for i in wanted])
        found: dict[str, Any] = {}
        for item_id, raw in zip(wanted, raws):
            try:
                found[item_id] = orjson.loads(raw) if raw is not None else None
            except orjson.JSONDecodeError:
                found[item_id] = None
        return _json({"items": found})

    @app.get("/v1/catalog", tags=["catalog"], response_model=models.CatalogPageOut, summary="Browse the catalog file loaded at start (demo shop window)")
    async def browse(
        category: CategoryFilter = None,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=200)] = 24,
    ) -> Response:
        total, items = ctx.catalog.page(category, offset, limit)
        return _json({"total": total, "offset": offset, "items": items})

    @app.get("/v1/catalog/categories", tags=["catalog"], response_model=list[models.CategoryCountOut], summary="Top categories of the loaded catalog file, with item counts")
    async def categories() -> Response:
        return _json(ctx.catalog.categories())

    @app.get("/v1/stats", tags=["ops"], response_model=models.StatsOut, summary="The job's counters and how fresh its output is")
    async def stats() -> Response:
        counters = {k.decode("utf-8", errors="replace"): _stat_value(v) for k, v in (await lookups.stats()).items()}
        now = ctx.clock_ms()
        last = counters.get("last_window_ts")
        freshness = now - int(last) if isinstance(last, (int, float)) and last > 0 else None
        return _json({"now_ms": now, "freshness_ms": freshness, "counters": counters})


def _add_write_routes(app: FastAPI, ctx: ApiContext) -> None:
    throttle = ctx.auth_throttle
    # Checking a write body is CPU-bound Python: one thread at a time, so the event loop competes
    # for the GIL with one thread, not with one per concurrent write.
    checking = anyio.CapacityLimiter(1)

    def require_key(request: Request, credentials: BearerCredentials) -> None:
        if not ctx.key_digests:
            raise ApiProblem(503, "writes-disabled", "write endpoints are disabled: no API key is configured (set FLOWREC_API_KEYS or --api-keys)")
        client = request.client.host if request.client else "unknown"
        # A throttled address is refused before its key is looked at: even the right key gets 429,
        # so the answers tell a guesser nothing until the window ends.
        wait_s = throttle.retry_after_s(client)
        if wait_s is not None:
            raise ApiProblem(429, "too-many-wrong-keys", f"too many wrong API keys from this address; retry in {wait_s} s", headers={"Retry-After": str(wait_s)})
        challenge = {"WWW-Authenticate": 'Bearer realm="flowrec"'}
        if credentials is None or not credentials.credentials:
            raise ApiProblem(401, "unauthorized", "this endpoint needs 'Authorization: Bearer <api key>'", headers=challenge)
        presented = _digest(credentials.credentials)
        matched = False
        for digest in ctx.key_digests:  # no early exit: every key is compared
            matched |= hmac.compare_digest(presented, digest)
        if not matched:
            throttle.failed(client)
            raise ApiProblem(401, "unauthorized", "the API key is not valid", headers={"WWW-Authenticate": 'Bearer realm="flowrec", error="invalid_token"'})

    def require_spool() -> Path:
        if ctx.settings.spool_dir is None:
            raise ApiProblem(503, "ingest-not-configured", "no spool directory is configured for the live job (set --spool-dir or FLOWREC_SPOOL_DIR)")
        return Path(ctx.settings.spool_dir)

    async def spool(folder: Path, kind: str, lines: list[bytes], now: int) -> None:
        """Write one spool file; a disk that refuses it (full, read-only, gone) is a 503 naming why.

        :func:`api.spool.write_spool_file` leaves nothing behind when it fails, so the
        records were not accepted at all and the client can simply retry them.
        """
        try:
            await run_in_threadpool(write_spool_file, folder, kind, lines, now)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            log.warning("spooling %s failed: %s", kind, exc)
            raise ApiProblem(503, "spool-unavailable", f"the records could not be handed to the job: its spool directory refused the write ({reason}); nothing was accepted, retry later", headers={"Retry-After": "5"}) from None

    async def json_body(request: Request) -> bytes:
        declared = request.headers.get("content-type", "")
        if not _JSON_MEDIA_TYPE.match(declared):
            raise ApiProblem(415, "unsupported-media-type", f"the body must be sent as Content-Type: application/json, not {declared[:100]!r}" if declared else "the body must be sent as Content-Type: application/json")
        return await request.body()

    def parse_records(body: bytes) -> list[Any]:
        if not body.strip():
            raise ApiProblem(400, "empty-body", "the request body is empty; send a JSON object or an array of objects")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ApiProblem(400, "bad-json", f"the request body is not valid JSON: {str(exc)[:200]}") from None
        if isinstance(data, dict):
            return [data]
        if not isinstance(data, list):
            raise ApiProblem(422, "validation", "the body must be a JSON object or an array of objects")
        if not data:
            raise ApiProblem(422, "validation", "the array is empty")
        if len(data) > MAX_RECORDS_PER_REQUEST:
            raise ApiProblem(422, "validation", f"at most {MAX_RECORDS_PER_REQUEST} records per request")
        return data

    def outcome(kind: str, accepted: int, rejections: list[RecordRejection]) -> dict[str, Any]:
        ctx.metrics.events.labels(kind, "accepted").inc(accepted)
        ctx.metrics.events.labels(kind, "rejected").inc(len(rejections))
        return {"accepted": accepted, "rejected": len(rejections), "rejections": [r.to_dict() for r in rejections[:MAX_REJECTIONS_SHOWN]]}

    write_problems = models.problem_responses(400, 401, 413, 415, 422, 429, 503)

    @app.post(
        "/v1/events",
        tags=["ingest"],
        status_code=202,
        response_model=models.IngestOut,
        responses=write_problems,
        dependencies=[Depends(require_key)],
        openapi_extra=models.json_body_schema(models.EventIn, MAX_RECORDS_PER_REQUEST),
        summary="Send one event or a batch to the live job",
    )
    async def post_events(request: Request) -> Response:
        """Each record is validated with the job's rules; the accepted ones are written to the job's
        spool directory as one new file.  202 with counts and the rejection reasons (by record index);
        422 when no record was accepted."""
        folder = require_spool()
        body = await json_body(request)
        now = ctx.clock_ms()

        def checked() -> tuple[int, int, list[bytes], list[RecordRejection]]:
            records = parse_records(body)
            events = validate_events(records, now, ctx.settings.model.max_clock_skew_ms)
            # JSON-array lines (one for a request of plain events): the job parses each as one record group.
            return len(records), events.accepted, spool_lines(events.batch), events.rejections

        # Parsing, validating and re-encoding 10,000 events takes ~0.2 s of CPU: in a worker thread,
        # so the event loop keeps answering lookups meanwhile.
        received, accepted, lines, rejections = await anyio.to_thread.run_sync(checked, limiter=checking)
        if accepted == 0:
            ctx.metrics.events.labels("event", "rejected").inc(len(rejections))
            raise ApiProblem(422, "no-records-accepted", f"none of the {received} events is valid (first: {rejections[0].reason}: {rejections[0].detail})", **outcome_fields(0, rejections))
        await spool(folder, "events", lines, now)
        return _json(outcome("event", accepted, rejections), 202)

    @app.post(
        "/v1/items",
        tags=["ingest"],
        status_code=202,
        response_model=models.IngestOut,
        responses=write_problems,
        dependencies=[Depends(require_key)],
        openapi_extra=models.json_body_schema(models.CatalogItemIn, MAX_RECORDS_PER_REQUEST),
        summary="Upsert catalog items",
    )
    async def post_items(request: Request) -> Response:
        """Accepted items go to the spool directory (the job updates content neighbours and filters)
        and then to their `item:` keys (lookups see them at once).  After a 503 a retry is harmless:
        an upsert is idempotent."""
        folder = require_spool()
        body = await json_body(request)
        now = ctx.clock_ms()

        def checked() -> tuple[int, list[CatalogItem], list[bytes], list[RecordRejection]]:
            records = parse_records(body)
            items, rejections = validate_catalog(records, now)
            return len(records), items, [item.to_json() + b"\n" for item in items], rejections

        received, items, lines, rejections = await anyio.to_thread.run_sync(checked, limiter=checking)
        if not items:
            ctx.metrics.events.labels("catalog", "rejected").inc(len(rejections))
            raise ApiProblem(422, "no-records-accepted", f"none of the {received} items is valid (first: {rejections[0].reason}: {rejections[0].detail})", **outcome_fields(0, rejections))
        await spool(folder, "catalog", lines, now)
        await run_in_threadpool(ctx.store.write, [Write(KeyKind.ITEM, item.item_id, item.to_json()) for item in items])
        for item in items:
            ctx.catalog.upsert(item)
        return _json(outcome("catalog", len(items), rejections), 202)

    @app.delete(
        "/v1/users/{user_id}",
        tags=["ingest"],
        status_code=202,
        response_model=models.ForgetOut,
        responses=models.problem_responses(401, 422, 429, 503),
        dependencies=[Depends(require_key)],
        summary="Forget a user (privacy)",
    )
    async def forget_user(user_id: UserId) -> Response:
        """The user's lists and profile are deleted from Redis now, and a forget event tells the job to
        clear the user's state; the job also drops the user's events stamped up to the accepted clock skew
        (`max_clock_skew_ms`, 5 minutes) after it, so nothing sent before the delete brings the user back.
        The event is written first, so a failed delete can simply be retried."""
        folder = require_spool()
        now = ctx.clock_ms()
        await spool(folder, "events", [forget_event_line(user_id, now)], now)
        deleted = await run_in_threadpool(ctx.store.delete_user, user_id)
        ctx.metrics.events.labels("forget", "accepted").inc()
        return _json({"user_id": user_id, "deleted_keys": int(deleted), "forget_queued": True}, 202)

    add_experiment_routes(app, ctx.store.client, ctx.store.namespace, ctx.clock_ms, require_key, require_spool, spool, json_body)


def outcome_fields(accepted: int, rejections: list[RecordRejection]) -> dict[str, Any]:
    """Problem-document extensions for a refused batch (same fields as the 202 body)."""
    return {"accepted": accepted, "rejected": len(rejections), "rejections": [r.to_dict() for r in rejections[:MAX_REJECTIONS_SHOWN]]}


def _add_ops_routes(app: FastAPI, ctx: ApiContext) -> None:
    @app.get("/healthz", tags=["ops"], summary="Liveness: the process answers")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz", tags=["ops"], responses=models.problem_responses(503), summary="Readiness: Redis answers and the spool directory takes writes")
    async def readyz() -> Response:
        try:
            await ctx.lookups.ping()
        except Exception as exc:  # any failure to reach Redis means "not ready", whatever its type
            log.warning("readiness check failed: %s", exc)
            return problem_response(503, "redis-unavailable", f"Redis is not reachable ({type(exc).__name__})", "/readyz", {"Retry-After": "1"})
        if ctx.settings.spool_dir is not None:
            # In a thread: a hung network mount must not stall the event loop.
            reason = await run_in_threadpool(spool_unwritable_reason, Path(ctx.settings.spool_dir), ctx.max_body_bytes)
            if reason is not None:
                log.warning("readiness check failed: %s", reason)
                return problem_response(503, "spool-unavailable", f"events cannot reach the job: {reason}", "/readyz", {"Retry-After": "5"})
        return _json({"status": "ready"})

    # Probes and monitors may use HEAD (the server sends the GET answer's headers only).
    for path, probe in (("/healthz", healthz), ("/readyz", readyz)):
        app.add_api_route(path, probe, methods=["HEAD"], include_in_schema=False)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics (text exposition)", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        # The API's own series, then the job's attribution and today's campaign counters read from Redis (off the event loop).
        attribution = await run_in_threadpool(attribution_exposition, ctx.store.client, ctx.store.namespace, ctx.clock_ms())
        return Response(generate_latest(ctx.metrics.registry) + attribution, media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return _json({"name": "flowrec", "docs": "/docs", "openapi": "/openapi.json", "demo": "/demo", "dashboard": "/dashboard"})


def _add_demo_routes(app: FastAPI, ctx: ApiContext) -> None:
    page = (STATIC_DIR / "demo.html").read_text(encoding="utf-8")
    config = {"apiKey": ctx.demo_key, "pollMs": 500}
    # JSON inside <script>: escape "<" so no value can close the script element.
    page = page.replace(_CONFIG_PLACEHOLDER, orjson.dumps(config).decode().replace("<", "\\u003c")).encode("utf-8")
    headers = page_headers(page)

    @app.get("/demo", include_in_schema=False)
    async def demo() -> Response:
        return HTMLResponse(page, headers=headers)

    app.mount("/demo/static", StaticFiles(directory=STATIC_DIR), name="demo-static")


def _add_docs_routes(app: FastAPI) -> None:
    """Swagger UI at /docs with its files served by the API itself: it works offline and under a strict CSP."""
    page = get_swagger_ui_html(
        openapi_url=app.openapi_url,
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{DOCS_STATIC_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_STATIC_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_STATIC_PATH}/favicon.png",
        swagger_ui_parameters=app.swagger_ui_parameters,
    ).body
    headers = page_headers(page)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return HTMLResponse(page, headers=headers)

    app.mount(DOCS_STATIC_PATH, StaticFiles(directory=str(importlib.resources.files("fastapi_offline") / "static")), name="docs-static")

