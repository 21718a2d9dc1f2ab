"""Pure-ASGI middleware: Prometheus metrics per route template, security headers, the request body limits, the hot-path shortcut.

All are plain ASGI callables rather than Starlette's ``BaseHTTPMiddleware``,
which would add a task and a memory stream to every request on the hot path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Histogram

from api.problems import PROBLEM_MEDIA_TYPE, REDIS_RETRY_AFTER_S, BodyTimeout, BodyTooLarge, problem_body, redis_unavailable_body
from api.security import SECURITY_HEADERS
from transforms.events import valid_id

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Latency buckets in seconds: fine below 10 ms where a lookup should land.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Label for requests no route matched (404s, bodies refused before routing):
# raw paths never become label values, so a scanner cannot blow up the series count.
UNMATCHED_ROUTE = "<unmatched>"


class ApiMetrics:
    """Request counters and latency histograms on a registry of their own (one per app).

    Series: ``flowrec_api_requests_total{method, route, status}`` and
    ``flowrec_api_request_duration_seconds{method, route}`` where ``route`` is
    the route template (``/v1/users/{user_id}/recommendations``), never the raw path.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter("flowrec_api_requests", "HTTP requests answered, by route template and status", ("method", "route", "status"), registry=self.registry)
        self.latency = Histogram("flowrec_api_request_duration_seconds", "Time from request start to the last response byte, by route template", ("method", "route"), buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.events = Counter("flowrec_api_ingested_records", "Records received by the write endpoints, by kind and outcome", ("kind", "outcome"), registry=self.registry)
        # labels() does a lock and a dict lookup; caching the children keeps the hot path short.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(method, route, str(status)), self.latency.labels(method, route))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class MetricsMiddleware:
    """Times every HTTP request and counts it under its route template and status.

    The route is read from ``scope["route"]`` after the app ran: FastAPI's
    router stores the matched route in the (shared) scope dict.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()  # a duration, not business time: not part of the injected clock
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            self.metrics.observe(scope["method"], template, status, time.perf_counter() - started)


class SecurityHeadersMiddleware:
    """Adds ``headers`` (:data:`api.security.SECURITY_HEADERS`) to every response of the app it wraps."""

    def __init__(self, app: ASGIApp, headers: tuple[tuple[bytes, bytes], ...]) -> None:
        self.app = app
        self.headers = list(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *self.headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimitMiddleware:
    """Refuses request bodies over ``limit_bytes`` with 413, and bodies slower than ``timeout_s`` with 408.

    A declared ``Content-Length`` over the limit is refused before anything is
    read; a chunked body is counted as it streams and ``receive`` raises
    :class:`BodyTooLarge`, which the app's handler turns into the same 413.
    The whole body must have arrived ``timeout_s`` after the request started,
    else ``receive`` raises :class:`BodyTimeout` (a 408 that closes the
    connection), so a client cannot hold a request open by dribbling its body.
    """

    def __init__(self, app: ASGIApp, limit_bytes: int, timeout_s: float | None = None) -> None:
        self.app = app
        self.limit_bytes = limit_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._refuse(scope, send, 400, "bad-request", "Content-Length is not a number")
                    return
                if declared > self.limit_bytes:
                    await self._refuse(scope, send, 413, "body-too-large", f"request body is larger than {self.limit_bytes} bytes")
                    return
                break
        seen = 0
        complete = False
        deadline = None if self.timeout_s is None else asyncio.get_running_loop().time() + self.timeout_s

        async def limited_receive() -> Message:
            nonlocal seen, complete
            if deadline is None or complete:
                message = await receive()
            else:
                try:
                    message = await asyncio.wait_for(receive(), max(deadline - asyncio.get_running_loop().time(), 0.0))
                except TimeoutError:
                    raise BodyTimeout(self.timeout_s) from None
            if message["type"] == "http.request":
                complete = not message.get("more_body", False)
                seen += len(message.get("body", b""))
                if seen > self.limit_bytes:
                    raise BodyTooLarge(self.limit_bytes)
            return message

        await self.app(scope, limited_receive, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, status: int, slug: str, detail: str) -> None:
        body = problem_body(status, slug, detail, scope.get("path"))
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode()), (b"connection", b"close"), *SECURITY_HEADERS]})
        await send({"type": "http.response.body", "body": body})


def simple_home_query(query_string: bytes, default_n: int = 10, max_n: int = 100) -> int | None:
    """``n`` of a query string that asks for nothing but the plain home list, else ``None``.

    Accepted: empty, ``n=<1..max_n>``, ``context=home``, or both, each at most
    once.  Anything else (other parameters, repeats, a bad ``n``, percent
    escapes) is left to the full route, which validates and reports it.
    """
    if not query_string:
        return default_n
    n = default_n
    seen: set[bytes] = set()
    for part in query_string.split(b"&"):
        name, _, value = part.partition(b"=")
        if name in seen:
            return None
        seen.add(name)
        if name == b"n":
            if not value.isdigit() or len(value) > 3:
                return None
            n = int(value)
            if not 1 <= n <= max_n:
                return None
        elif name != b"context" or value != b"home":
            return None
    return n


class HomeListShortcut:
    """The hot path: ``GET /v1/users/{id}/recommendations[?n=..][&context=home]`` without FastAPI's parameter machinery.

    FastAPI spends more CPU resolving and validating the route's seven query
    parameters than the whole lookup costs, so the plainest request shape,
    which is nearly all traffic, is answered here by the very function the
    route uses (``home_body``).  The id is checked with the same rule
    (:func:`transforms.events.valid_id`); every other request, including every
    invalid one, goes on to the full route.  ``scope["route"]`` is set so the
    metrics count it under the route template.

    Why this second path exists, by ``flowrec bench api`` (both variants side
    by side in each run, one worker, 2 shared cores, medians of 3 runs): the
    home list costs the API process 111 us of CPU per request with this
    shortcut and the pipelined client, 331 us through the FastAPI route, and
    476 us with ``redis.asyncio`` (hiredis) and the FastAPI route, so the plain
    variant tops out near 2k requests/s on a whole core, far from the 5k
    requests/s at p99 <= 5 ms the API is meant to serve (closed loop: 4.4k
    vs 1.2k requests/s, p99 17 vs 107 ms, on a machine loaded by other work).
    The other read routes are rarer and go through FastAPI.
    """

    PREFIX = "/v1/users/"
    SUFFIX = "/recommendations"

    def __init__(self, app: ASGIApp, home_body: Callable[[str, int, str | None, set[str]], Awaitable[bytes]], route: Any) -> None:
        self.app = app
        self.home_body = home_body
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            path = scope["path"]
            if path.startswith(self.PREFIX) and path.endswith(self.SUFFIX):
                user_id = path[len(self.PREFIX) : -len(self.SUFFIX)]
                n = simple_home_query(scope["query_string"])
                if n is not None and valid_id(user_id):
                    await self._answer(scope, send, user_id, n)
                    return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, send: Send, user_id: str, n: int) -> None:
        import redis

        scope["route"] = self.route
        try:
            body = await self.home_body(user_id, n, None, set())
            headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
            status = 200
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            body = redis_unavailable_body(exc, scope["path"])
            headers = [(b"content-length", str(len(body)).encode()), (b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"retry-after", str(REDIS_RETRY_AFTER_S).encode())]
            status = 503
        await send({"type": "http.response.start", "status": status, "headers": [*headers, *SECURITY_HEADERS]})
        await send({"type": "http.response.body", "body": body})
