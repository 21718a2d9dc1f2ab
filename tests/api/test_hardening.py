"""What a client trying the API from outside should not get away with: open redirects from the Host
header, pages without browser protections, docs that need a CDN, a 405 for HEAD, non-JSON bodies on
JSON endpoints, a 500 for a client that hung up, validation on the event loop, unlimited key guessing."""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from api import app as app_module
from api.ready import wait_ready
from api.security import FailedAuthThrottle
from flowrec.localredis import free_port
from tests.envkit import clean_environment

from .conftest import API_KEY, assert_problem
from .test_ingest import spool_files

EVENT = {"user_id": "u1", "item_id": "i1", "event_type": "click"}


def test_a_trailing_slash_is_404_never_a_redirect_to_the_host_header(api):
    response = api.get("/v1/trending/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert "location" not in response.headers
    assert_problem(response, 404)
    assert api.get("/v1/trending", headers={"Host": "evil.example"}).status_code == 200


@pytest.mark.parametrize("path", ["/demo", "/docs"])
def test_html_pages_forbid_framing_sniffing_and_foreign_scripts(api, path):
    response = api.get(path)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    policy = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'self'" and policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
    # Inline scripts run only if they are exactly the page's own (pinned by hash).
    inline = re.findall(rb"<script>(.*?)</script>", response.content, re.DOTALL)
    assert inline, "both pages have an inline script"
    for body in inline:
        assert f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'" in policy["script-src"].split()
    assert "'unsafe-inline'" not in policy["script-src"] and "'unsafe-eval'" not in policy["script-src"]


def test_every_response_says_nosniff(api, auth):
    too_big = api.post("/v1/events", content=b" " * (2 << 20), headers={**auth, "Content-Type": "application/json"})  # refused by the body limit
    for response in (api.get("/v1/trending"), api.get("/v1/users/u1/recommendations"), api.get("/nope"), api.get("/demo/static/demo.js"), too_big):
        assert response.headers["x-content-type-options"] == "nosniff", response.url


def test_docs_load_everything_from_the_api_itself(api):
    page = api.get("/docs").text
    urls = re.findall(r'(?:src|href)="([^"]+)"', page) + re.findall(r"url: '([^']+)'", page)
    assert len(urls) >= 4, page
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), f"{url} is not on this server"
        assert api.get(url).status_code == 200, url
    script = api.get("/docs/static/swagger-ui-bundle.js")
    assert "javascript" in script.headers["content-type"] and b"SwaggerUIBundle" in script.content


def test_head_on_health_and_readiness(api):
    for path in ("/healthz", "/readyz"):
        response = api.head(path)
        assert response.status_code == 200 and response.content == b"", path


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None])
def test_json_endpoints_refuse_other_media_types(api, auth, spool_dir, content_type):
    headers = {**auth, **({"Content-Type": content_type} if content_type else {})}
    for path in ("/v1/events", "/v1/items"):
        body = b'{"user_id":"u1","item_id":"i1","event_type":"click"}'
        doc = assert_problem(api.post(path, content=body, headers=headers), 415, "unsupported-media-type")
        assert "application/json" in doc["detail"]
    assert spool_files(spool_dir) == []


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"])
def test_json_media_types_are_accepted(api, auth, content_type):
    body = b'{"user_id":"u1","item_id":"i1","event_type":"click"}'
    assert api.post("/v1/events", content=body, headers={**auth, "Content-Type": content_type}).status_code == 202


def test_events_are_validated_off_the_event_loop(api, auth, monkeypatch):
    """A 10,000-event batch takes tens of milliseconds to validate: a worker thread does it, so lookups go on."""
    threads: list[str] = []
    real = app_module.validate_events

    def validate_events(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(app_module, "validate_events", validate_events)
    batch = [{"user_id": f"u{i % 50}", "item_id": f"i{i % 30}", "event_type": "view"} for i in range(10_000)]
    assert api.post("/v1/events", json=batch, headers=auth).json()["accepted"] == 10_000
    [thread] = threads
    assert not thread.startswith("uvicorn-"), f"validated on the server's event loop thread {thread}"


def test_wrong_keys_from_one_address_are_throttled(api, auth, clock):
    wrong = {"Authorization": "Bearer guess"}
    for _ in range(5):  # no key at all is not a guess
        assert_problem(api.post("/v1/events", json=EVENT), 401, "unauthorized")
    for _ in range(20):
        assert_problem(api.post("/v1/events", json=EVENT, headers=wrong), 401, "unauthorized")
    for headers in (wrong, auth):  # now even the right key gets 429: the answers tell a guesser nothing
        refused = api.post("/v1/events", json=EVENT, headers=headers)
        doc = assert_problem(refused, 429, "too-many-wrong-keys")
        assert refused.headers["retry-after"] == "60" and "retry in 60 s" in doc["detail"]
    assert api.get("/v1/trending").status_code == 200, "reads are not throttled"
    clock.now_ms += 45_000
    assert api.post("/v1/events", json=EVENT, headers=auth).headers["retry-after"] == "15"
    clock.now_ms += 15_000
    assert api.post("/v1/events", json=EVENT, headers=auth).status_code == 202


def test_the_throttle_forgets_old_windows_and_bounds_its_memory():
    now = [0]
    throttle = FailedAuthThrottle(lambda: now[0], max_failures=2, window_ms=1000, max_clients=3)
    throttle.failed("a")
    throttle.failed("a")
    assert throttle.retry_after_s("a") == 1 and throttle.retry_after_s("b") is None
    for client in ("b", "c", "d"):
        throttle.failed(client)
    assert throttle.retry_after_s("a") is None, "the oldest address was dropped to stay within max_clients"
    now[0] = 1000
    throttle.failed("b")
    throttle.failed("e")
    assert throttle.retry_after_s("b") is None, "a new window started for b"


def test_a_client_hanging_up_mid_body_is_not_a_server_error(redis_url, tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "flowrec.cli", "serve", "--port", str(port), "--redis-url", redis_url, "--api-keys", API_KEY,
               "--spool-dir", str(tmp_path / "spool")]
    server = subprocess.Popen(command, env=clean_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
                         "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{\"user_id\":".encode())
            time.sleep(0.2)
        counted = re.compile(r'^flowrec_api_requests_total\{method="POST",route="/v1/events",status="(\d+)"\} 1\.0$', re.MULTILINE)
        deadline = time.monotonic() + 20
        while not counted.search(metrics := httpx.get(f"{base}/metrics").text):
            assert time.monotonic() < deadline, metrics
            time.sleep(0.05)
        assert counted.search(metrics).group(1) == "499", "counted as 'client closed request'"
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0].decode()
    assert "went away before sending its whole request: POST /v1/events" in output
    assert "Traceback" not in output and " ERROR " not in output, output
