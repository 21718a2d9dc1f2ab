"""Limits at the HTTP edge, against a real `flowrec serve` process over raw sockets: request head size
and header count (431), a slow head or body (408), the connection cap (503), and ordinary keep-alive
and pipelined traffic unharmed.  The server runs with small limits so each case is quick; the socket
timeouts are generous caps that only an unbounded server would hit."""

from __future__ import annotations

import functools
import pickle
import socket
import subprocess
import sys
import time
from typing import Iterator

import orjson
import pytest

from api.edge import EdgeLimits, GuardedHttpToolsProtocol, raw_problem_response
from api.ready import wait_ready
from flowrec.localredis import free_port
from tests.envkit import clean_environment

KEY = "edge-test-key"
HEAD_TIMEOUT_S = 1.0
CAP_S = 20.0  # what "forever" is cut to


class Server:
    def __init__(self, port: int, process: subprocess.Popen) -> None:
        self.port = port
        self.process = process

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=CAP_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


@pytest.fixture(scope="module")
def server(redis_server, tmp_path_factory) -> Iterator[Server]:
    port = free_port()
    spool = tmp_path_factory.mktemp("spool")
    command = [sys.executable, "-m", "flowrec.cli", "serve", "--port", str(port), "--redis-url", redis_server.url, "--api-keys", KEY,
               "--spool-dir", str(spool), "--max-header-bytes", "4096", "--max-headers", "20", "--header-timeout-s", str(HEAD_TIMEOUT_S),
               "--body-timeout-s", "1", "--max-connections", "6"]
    process = subprocess.Popen(command, env=clean_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process)
        yield Server(port, process)
    finally:
        process.terminate()
        process.communicate(timeout=30)


def response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One whole response (status, headers, body) read from ``sock``; fails if the server closes first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection without answering: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def problem(status: int, headers: dict[str, str], body: bytes, expected: int, slug: str) -> dict:
    assert status == expected, body
    assert headers["content-type"] == "application/problem+json" and headers["connection"] == "close"
    doc = orjson.loads(body)
    assert doc["status"] == expected and doc["type"] == f"urn:flowrec:problem:{slug}", doc
    return doc


def get(path: str, extra: bytes = b"") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n".encode() + extra + b"\r\n"


def test_a_large_header_is_431_before_the_app(server):
    with server.connect() as sock:
        sock.sendall(get("/healthz", b"X-Big: " + b"a" * 8000 + b"\r\n"))
        doc = problem(*response(sock), 431, "header-too-large")
        assert "4096 bytes" in doc["detail"]
        assert closed_by_server(sock)


def test_a_large_head_arriving_in_pieces_is_431(server):
    with server.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-A: " + b"a" * 3000 + b"\r\n")
        time.sleep(0.2)  # a read of its own
        sock.sendall(b"X-B: " + b"b" * 3000 + b"\r\n\r\n")
        problem(*response(sock), 431, "header-too-large")


def test_a_head_that_never_ends_is_cut_off_not_buffered(server):
    """4 MiB of header that never ends: the server stops reading after the limit instead of buffering it all."""
    with server.connect() as sock:
        sent = 0
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Filler: ")
            while sent < 4 << 20:
                sock.sendall(b"a" * 65536)
                sent += 65536
        except OSError:
            pass  # reset or broken pipe: the server closed the connection
        assert sent < 4 << 20, "the server took the whole head"


def test_too_many_headers_is_431(server):
    with server.connect() as sock:
        sock.sendall(get("/healthz", b"".join(b"X-H%d: v\r\n" % i for i in range(25))))
        doc = problem(*response(sock), 431, "too-many-headers")
        assert "more than 20" in doc["detail"]
    with server.connect() as sock:
        sock.sendall(get("/healthz", b"".join(b"X-H%d: v\r\n" % i for i in range(15))))
        assert response(sock)[0] == 200


def test_a_slow_request_head_gets_408_and_is_closed(server):
    with server.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")  # and never the blank line
        doc = problem(*response(sock), 408, "request-timeout")
        assert "request head" in doc["detail"]
        assert closed_by_server(sock)


def test_a_slowloris_dribbling_header_lines_is_closed(server):
    with server.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        sock.settimeout(0.3)
        answered = b""
        for _ in range(int(CAP_S / 0.3)):
            try:
                sock.sendall(b"X-a: b\r\n")
                answered = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if answered:
                break
        assert answered.startswith(b"HTTP/1.1 408 "), answered


def test_an_idle_connection_is_closed_without_an_answer(server):
    with server.connect() as sock:
        assert sock.recv(65536) == b""


def test_a_slow_body_gets_408_and_is_closed(server):
    with server.connect() as sock:
        sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " + KEY.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[{\"user_id\":")
        doc = problem(*response(sock), 408, "request-timeout")
        assert "request body" in doc["detail"]
        assert closed_by_server(sock)


def test_kept_alive_and_pipelined_requests_still_work(server):
    with server.connect() as sock:
        sock.sendall(get("/healthz"))
        assert response(sock)[0] == 200
        time.sleep(HEAD_TIMEOUT_S * 1.5)  # idle between requests is the keep-alive timeout's business (5 s)
        sock.sendall(get("/healthz") + get("/v1/trending"))
        assert [response(sock)[0], response(sock)[0]] == [200, 200]


def test_connections_past_the_cap_get_503(server):
    held = [server.connect() for _ in range(6)]
    try:
        for sock in held:  # each is accepted and served
            sock.sendall(get("/healthz"))
            assert response(sock)[0] == 200
        with server.connect() as extra:
            doc = problem(*response(extra), 503, "too-many-connections")
            assert "too many open connections" in doc["detail"]
            assert closed_by_server(extra)
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + CAP_S
    while True:  # once the server has seen them go, new connections are served again
        with server.connect() as sock:
            sock.sendall(get("/healthz"))
            if response(sock)[0] == 200:
                break
        assert time.monotonic() < deadline


def test_limits_are_validated():
    with pytest.raises(ValueError, match="max_headers"):
        EdgeLimits(max_headers=0)
    with pytest.raises(ValueError, match="head_timeout_s"):
        EdgeLimits(head_timeout_s=0)
    assert raw_problem_response(503, "x", "busy").startswith(b"HTTP/1.1 503 Service Unavailable\r\n")


def test_the_protocol_travels_to_worker_processes_lightly():
    """With --workers uvicorn pickles the protocol factory to each worker, which unpickles it before it
    can answer its supervisor's health pings (5 s, or it is killed): unpickling must not import FastAPI."""
    factory = functools.partial(GuardedHttpToolsProtocol, limits=EdgeLimits(max_headers=5))
    code = "import pickle, sys; f = pickle.loads(sys.stdin.buffer.read()); print(f.keywords['limits'].max_headers, 'fastapi' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(factory), capture_output=True, timeout=60)
    assert done.stdout.decode().split() == ["5", "False"], done.stderr
