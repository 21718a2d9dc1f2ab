"""Browser-facing safety of the API's responses, and the throttle on wrong API keys.

Every response carries :data:`SECURITY_HEADERS` (no MIME sniffing, no framing,
no referrer), added by :class:`api.middleware.SecurityHeadersMiddleware`.  The
HTML pages (/demo, /docs) also carry a Content-Security-Policy from
:func:`page_headers`: scripts only from the API itself plus the page's own inline
scripts, pinned by their SHA-256, so an injected script cannot run.

:class:`FailedAuthThrottle` slows a client guessing write keys: past
``max_failures`` wrong keys from one address within a window, every write from
that address is answered 429 with ``Retry-After`` until the window ends.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import re
from collections import OrderedDict
from typing import Callable

log = logging.getLogger(__name__)

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def content_security_policy(html: bytes) -> str:
    """The policy for one HTML page: its inline scripts are allowed by hash, everything else must be same-origin.

    Styles may be inline (Swagger UI sets ``style`` attributes); images may be
    ``data:`` URIs (Swagger UI's icons).
    """
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'" for body in _INLINE_SCRIPT.findall(html))
    return (
        f"default-src 'self'; script-src 'self' {hashes}".rstrip()
        + "; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def page_headers(html: bytes) -> dict[str, str]:
    """Headers of an HTML page served by the API (with :data:`SECURITY_HEADERS` added by the middleware)."""
    return {"Content-Security-Policy": content_security_policy(html), "Cache-Control": "no-store"}


class FailedAuthThrottle:
    """Wrong API keys counted per client address in fixed windows of ``window_ms``.

    At most ``max_clients`` addresses are tracked: past that, ended windows are
    dropped first, then the oldest ones, so memory stays bounded whatever the
    number of addresses a client uses.  Time comes from ``clock_ms`` (the app's clock).
    """

    def __init__(self, clock_ms: Callable[[], int], max_failures: int = 20, window_ms: int = 60_000, max_clients: int = 10_000) -> None:
        self.clock_ms = clock_ms
        self.max_failures = max_failures
        self.window_ms = window_ms
        self.max_clients = max_clients
        # address -> (window start ms, failures in it), oldest window start first: the ended windows are
        # a prefix, and forgetting takes entries from the front (O(1) each; see state.recent.RecentlyUsed).
        self._windows: OrderedDict[str, tuple[int, int]] = OrderedDict()

    def retry_after_s(self, client: str) -> int | None:
        """Seconds until ``client`` may try again, or ``None`` when it is not throttled."""
        entry = self._windows.get(client)
        if entry is None:
            return None
        start, failures = entry
        left_ms = start + self.window_ms - self.clock_ms()
        if left_ms <= 0:
            del self._windows[client]
            return None
        return math.ceil(left_ms / 1000) if failures >= self.max_failures else None

    def failed(self, client: str) -> None:
        """Count one wrong key from ``client``."""
        now = self.clock_ms()
        start, failures = self._windows.get(client, (now, 0))
        if now - start >= self.window_ms:
            # A new window: to the end, where the newest window starts are.
            self._windows.pop(client, None)
            start, failures = now, 0
        self._windows[client] = (start, failures + 1)
        if failures + 1 == self.max_failures:
            log.warning("%d wrong API keys from %s within %d s: its writes get 429 until the window ends", self.max_failures, client, self.window_ms // 1000)
        if len(self._windows) > self.max_clients:
            self._forget_some(now)

    def _forget_some(self, now: int) -> None:
        """Drop ended windows, then the oldest live ones while more than ``max_clients`` are tracked."""
        windows = self._windows
        while windows:
            start, _ = windows[oldest := next(iter(windows))]
            if now - start < self.window_ms and len(windows) <= self.max_clients:
                break
            del windows[oldest]
