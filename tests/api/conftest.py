"""Fixtures for the API tests: the real app under uvicorn on a free port, against the real Redis fixture."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
import uvicorn

from api.app import create_app
from flowrec.config import Settings
from state.keys import KeyKind
from state.store import RedisStore, ScoredItem, Write, encode_list
from transforms.reasons import UNSTRUCTURED, Reason

# The clock every test app runs on (epoch ms, 2023-11-14T22:13:20Z); tests move it explicitly.
NOW_MS = 1_700_000_000_000
API_KEY = "test-key-0123456789"


class FakeClock:
    """An injectable ``clock_ms``: returns ``now_ms`` until a test changes it."""

    def __init__(self, now_ms: int = NOW_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


@contextmanager
def running(app: Any, stopping: list[threading.Thread] | None = None) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread on a free loopback port; yields the base URL.

    On exit the server is told to stop; with a ``stopping`` list the thread is
    appended there instead of joined (uvicorn takes ~0.2 s to wind down, which
    adds up over a hundred tests; the session joins them at its end).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        if stopping is None:
            thread.join(timeout=10)
        else:
            stopping.append(thread)


def put_list(store: RedisStore, kind: KeyKind, part: str | None, ts: int, items: list[tuple], **extra: Any) -> None:
    """Write a hand-made list ``[(item, score[, reason]), ...]`` the way the job does (a reason given
    as text is stored with only its text, as values written before reasons had codes)."""
    entries = [ScoredItem(*entry[:2], Reason(UNSTRUCTURED, text=entry[2]) if len(entry) > 2 and isinstance(entry[2], str) else (entry[2] if len(entry) > 2 else None)) for entry in items]
    store.write([Write(kind, part, encode_list(ts, entries, **extra))])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    path = tmp_path / "spool"
    path.mkdir()
    return path


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    store = RedisStore.from_url(redis_url)
    yield store
    store.client.close()


@pytest.fixture(scope="session")
def stopping_servers() -> Iterator[list[threading.Thread]]:
    threads: list[threading.Thread] = []
    yield threads
    for thread in threads:
        thread.join(timeout=10)


@pytest.fixture
def serve(redis_url: str, spool_dir: Path, clock: FakeClock, stopping_servers: list[threading.Thread]) -> Iterator[Callable[..., str]]:
    """Factory: ``serve(settings overrides..., **create_app kwargs)`` starts an app and returns its URL."""
    stack: list[Any] = []

    def start(settings: Settings | None = None, **kwargs: Any) -> str:
        settings = settings or Settings(redis_url=redis_url, spool_dir=spool_dir, api_keys=(API_KEY,))
        kwargs.setdefault("clock_ms", clock)
        context = running(create_app(settings, **kwargs), stopping_servers)
        url = context.__enter__()
        stack.append(context)
        return url

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


@pytest.fixture
def api(serve: Callable[..., str]) -> Iterator[httpx.Client]:
    """An HTTP client on the default test app (one write key, spool dir, fake clock)."""
    with httpx.Client(base_url=serve(), timeout=10) as client:
        yield client


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


def assert_problem(response: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    """The response is an RFC 9457 problem document with ``status`` (and type ``urn:flowrec:problem:<slug>``)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    doc = response.json()
    assert doc["status"] == status
    assert isinstance(doc["title"], str) and doc["title"]
    assert isinstance(doc["detail"], str) and doc["detail"]
    assert doc["type"] == (f"urn:flowrec:problem:{slug}" if slug else "about:blank")
    return doc


def assert_unavailable(response: httpx.Response) -> dict[str, Any]:
    """A 503 problem saying Redis is unavailable, with a ``Retry-After`` the client can honour."""
    doc = assert_problem(response, 503, "redis-unavailable")
    assert int(response.headers["retry-after"]) >= 1
    return doc
