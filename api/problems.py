"""Errors as RFC 9457 problem details: ``{"type", "title", "status", "detail", ...}``.

Every 4xx/5xx the API sends has this shape and the media type
``application/problem+json``.  ``type`` is a ``urn:flowrec:problem:<slug>`` URN
for flowrec's own problems and ``about:blank`` for plain HTTP errors (unknown
route, wrong method), as RFC 9457 section 4.2.1 suggests.  Extra members
(``errors`` for validation failures, ``rejections`` for refused events) are
extensions the RFC allows.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from state.keys import InvalidKeyPart

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
# Seconds a client is asked to wait (Retry-After) when Redis is unavailable.
REDIS_RETRY_AFTER_S = 1
# How many validation errors are spelled out in `detail`; all are in `errors`.
MAX_ERRORS_IN_DETAIL = 3
# The status a request is counted under when its client went away before the answer
# (nginx's "client closed request"; nothing is sent, the metrics see it).
CLIENT_CLOSED_REQUEST = 499


class ApiProblem(Exception):
    """Raise to answer with a problem document; ``slug`` names the problem type."""

    def __init__(self, status: int, slug: str, detail: str, headers: dict[str, str] | None = None, **extensions: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions


class BodyTooLarge(Exception):
    """Raised by the body-limit middleware's ``receive`` when a streamed body passes the limit."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"request body is larger than {limit_bytes} bytes")
        self.limit_bytes = limit_bytes


class BodyTimeout(Exception):
    """Raised by the body-limit middleware's ``receive`` when the body did not arrive in time."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the request body did not arrive within {timeout_s:g} s")


def problem_body(status: int, slug: str | None, detail: str, instance: str | None = None, **extensions: Any) -> bytes:
    """The JSON bytes of one problem document (``slug=None`` gives ``type: about:blank``)."""
    doc: dict[str, Any] = {
        "type": f"urn:flowrec:problem:{slug}" if slug else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance:
        doc["instance"] = instance
    doc.update(extensions)
    return orjson.dumps(doc)


def redis_unavailable_body(exc: Exception, instance: str | None) -> bytes:
    """The 503 problem for a Redis failure; refused credentials are named, every other failure reads as unreachable.

    Logged here, once per answer, so the API log says why.  Send it with
    ``Retry-After: REDIS_RETRY_AFTER_S``.
    """
    import redis

    log.warning("redis unavailable: %s", exc)
    if isinstance(exc, redis.AuthenticationError):
        detail = "the recommendation store (Redis) refused the API's credentials; retry later"
    else:
        detail = "the recommendation store (Redis) is not reachable; retry shortly"
    return problem_body(503, "redis-unavailable", detail, instance)


def problem_response(status: int, slug: str | None, detail: str, instance: str | None = None, headers: dict[str, str] | None = None, **extensions: Any) -> Response:
    return Response(problem_body(status, slug, detail, instance, **extensions), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _location(loc: tuple[Any, ...]) -> str:
    """``("query", "n")`` -> ``"query parameter 'n'"``; ``("body", 0, "ts")`` -> ``"body[0].ts"``."""
    if not loc:
        return "request"
    where, rest = loc[0], loc[1:]
    if where in ("query", "path", "header", "cookie") and rest:
        return f"{where} parameter '{rest[0]}'"
    text = str(where)
    for part in rest:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def validation_problem(errors: list[dict[str, Any]]) -> tuple[str, list[dict[str, str]]]:
    """A readable ``detail`` and the ``errors`` extension from pydantic's error list (inputs not echoed)."""
    listed = [{"location": _location(tuple(e.get("loc", ()))), "message": str(e.get("msg", "invalid"))} for e in errors]
    detail = "; ".join(f"{e['location']}: {e['message']}" for e in listed[:MAX_ERRORS_IN_DETAIL])
    if len(listed) > MAX_ERRORS_IN_DETAIL:
        detail += f" (and {len(listed) - MAX_ERRORS_IN_DETAIL} more)"
    return detail or "the request is invalid", listed


def install_problem_handlers(app: FastAPI) -> None:
    """Map every error the app can raise to a problem document; bad input never becomes a 500."""
    import redis

    async def on_problem(request: Request, exc: ApiProblem) -> Response:
        return problem_response(exc.status, exc.slug, exc.detail, request.url.path, exc.headers, **exc.extensions)

    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).description
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such resource: {request.method} {request.url.path[:200]}"
        return problem_response(exc.status_code, None, detail, request.url.path, dict(exc.headers or {}))

    async def on_validation(request: Request, exc: RequestValidationError) -> Response:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return problem_response(400, "bad-json", "the request body is not valid JSON", request.url.path)
        detail, listed = validation_problem(errors)
        return problem_response(422, "validation", detail, request.url.path, errors=listed)

    async def on_invalid_key(request: Request, exc: InvalidKeyPart) -> Response:
        return problem_response(422, "validation", str(exc), request.url.path)

    async def on_too_large(request: Request, exc: BodyTooLarge) -> Response:
        return problem_response(413, "body-too-large", str(exc), request.url.path)

    async def on_body_timeout(request: Request, exc: BodyTimeout) -> Response:
        # The rest of the body may still come: the connection cannot carry another request.
        return problem_response(408, "request-timeout", str(exc), request.url.path, {"Connection": "close"})

    async def on_redis_down(request: Request, exc: Exception) -> Response:
        return Response(redis_unavailable_body(exc, request.url.path), status_code=503, media_type=PROBLEM_MEDIA_TYPE, headers={"Retry-After": str(REDIS_RETRY_AFTER_S)})

    async def on_disconnect(request: Request, exc: ClientDisconnect) -> Response:
        # Clients give up (timeouts, closed tabs): routine, not a server error.
        log.info("client %s went away before sending its whole request: %s %s", request.client.host if request.client else "?", request.method, request.url.path[:200])
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    async def on_bug(request: Request, exc: Exception) -> Response:
        # Starlette logs the traceback and re-raises after this answer; the client learns nothing internal.
        return problem_response(500, "internal", "the server failed to answer this request; it has been logged", request.url.path)

    app.add_exception_handler(ApiProblem, on_problem)
    app.add_exception_handler(Exception, on_bug)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(InvalidKeyPart, on_invalid_key)
    app.add_exception_handler(BodyTooLarge, on_too_large)
    app.add_exception_handler(BodyTimeout, on_body_timeout)
    app.add_exception_handler(ClientDisconnect, on_disconnect)
    app.add_exception_handler(redis.ConnectionError, on_redis_down)
    app.add_exception_handler(redis.TimeoutError, on_redis_down)
