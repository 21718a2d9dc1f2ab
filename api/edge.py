"""Limits at the HTTP edge that uvicorn's httptools protocol does not set by itself.

uvicorn bounds neither the size nor the number of a request's headers when it
parses with httptools (its ``h11_max_incomplete_event_size`` applies to the much
slower h11 parser only), gives a client unlimited time to send a request head
(its ``timeout_keep_alive`` runs only between requests), and accepts every
connection (``limit_concurrency`` answers 503 per request but keeps the
connection).  So an unauthenticated client could make the server buffer
megabytes per connection, or hold connections open forever with a header line
now and then (slowloris).  :class:`GuardedHttpToolsProtocol` is uvicorn's
httptools protocol with those bounds (:class:`EdgeLimits`):

* a request head (request line and headers) over ``max_head_bytes``, or with more
  than ``max_headers`` headers, is answered 431 and the connection closed, before
  the app sees it; an unfinished head is cut off as soon as it passes the size;
* a head not complete ``head_timeout_s`` after the connection opened (or, on a
  kept-alive connection, after its first bytes; the idle time between requests is
  uvicorn's keep-alive timeout) is answered 408, or the connection just closed
  when nothing was sent;
* a connection past ``max_connections`` (per server process) gets a 503 and is closed.

The body's deadline is the app's (:class:`api.middleware.BodyLimitMiddleware`).
Responses from here are problem documents like the app's.  The class overrides
uvicorn's parser callbacks, which are not a public API: tests/api/test_edge.py
drives every limit through a real server, so an uvicorn upgrade that changes
them fails there.  Cost: about 3 us per request over the plain protocol.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

# Bytes a header line costs besides its name and value (": " and CRLF).
_HEADER_OVERHEAD = 4


@dataclass(frozen=True)
class EdgeLimits:
    """What one connection may cost the server before the app runs (defaults: ``flowrec serve``'s)."""

    max_head_bytes: int = 16 * 1024
    max_headers: int = 100
    head_timeout_s: float = 10.0
    max_connections: int = 1000

    def __post_init__(self) -> None:
        for name in ("max_head_bytes", "max_headers", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not self.head_timeout_s > 0:
            raise ValueError("head_timeout_s must be positive")


def raw_problem_response(status: int, slug: str, detail: str) -> bytes:
    """A complete HTTP/1.1 response carrying a problem document, closing the connection."""
    # Imported here, not at the top: uvicorn unpickles the protocol (so imports this module) in each
    # worker process before the worker answers its supervisor's health pings, and api.problems pulls
    # in FastAPI, which takes seconds on a loaded machine (the supervisor then kills the worker).
    from api.problems import PROBLEM_MEDIA_TYPE, problem_body

    body = problem_body(status, slug, detail)
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"content-type: {PROBLEM_MEDIA_TYPE}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n"
    )
    if status == 503:
        head += "retry-after: 1\r\n"
    return head.encode("ascii") + b"\r\n" + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`EdgeLimits` (pass to uvicorn as ``http=functools.partial(cls, limits=...)``)."""

    def __init__(self, *args: Any, limits: EdgeLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._read_bytes = 0  # size of the read being parsed
        self._head_started = False  # a request head is being received
        self._head_bytes = 0  # an upper bound of its size so far: every read it touched, whole
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    # -- connection ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            log.info("refusing a connection: %d open, the cap is %d", len(self.connections) - 1, self.limits.max_connections)
            self._refuse(503, "too-many-connections", "the server has too many open connections; retry shortly")
            return
        self._arm_head_timer()  # until the first head is complete, including a connection that sends nothing

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._read_bytes = len(data)
        if self._head_started:
            self._head_bytes += len(data)
        super().data_received(data)
        if not self._head_started or self._refused:
            return
        # The head is still incomplete after this read.
        if self._head_bytes > self.limits.max_head_bytes:
            self._refuse(431, "header-too-large", f"the request head is larger than {self.limits.max_head_bytes} bytes")
        elif self._head_timer is None:
            # A head split over several reads (rare: a whole head nearly always comes in one)
            # gets its deadline now; a timer per request would cost every request.
            self._arm_head_timer()

    # -- parser callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True
        self._head_bytes = self._read_bytes  # the head begins somewhere in this read

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._cancel_head_timer()
        self._head_started = False
        if len(self.headers) > self.limits.max_headers:
            self._refuse(431, "too-many-headers", f"the request has {len(self.headers)} headers, more than {self.limits.max_headers}")
            return
        # The exact size only when the cheap bound is over the limit (the reads held a body too, or a big head).
        if self._head_bytes > self.limits.max_head_bytes and len(self.url) + sum(len(name) + len(value) + _HEADER_OVERHEAD for name, value in self.headers) > self.limits.max_head_bytes:
            self._refuse(431, "header-too-large", f"the request head is larger than {self.limits.max_head_bytes} bytes")
            return
        super().on_headers_complete()

    # After a refusal the parser may still call back for the rest of the read; there is no request to feed.
    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    # -- limits ------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._refused or self.transport.is_closing():
            return
        if not self._head_started:
            # Nothing sent (an idle or speculative connection): nobody to answer.
            self._refused = True
            self.transport.close()
            return
        log.debug("closing a connection whose request head took over %g s", self.limits.head_timeout_s)
        self._refuse(408, "request-timeout", f"the request head was not complete within {self.limits.head_timeout_s:g} s")

    def _refuse(self, status: int, slug: str, detail: str) -> None:
        """Answer ``status`` without running the app, and close the connection."""
        self._refused = True
        self._cancel_head_timer()
        if status == 431:
            log.info("refused a request from %s: %s", self.client[0] if self.client else "?", detail)
        # A pipelined request's refusal must not cut into the response still being sent: then just close.
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(raw_problem_response(status, slug, detail))
        self.transport.close()
