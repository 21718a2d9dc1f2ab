"""deploy/nginx/flowrec.conf, the reverse-proxy recipe, run by a real nginx in front of a real
`flowrec serve`: the file is valid, requests pass through, and its own limits answer before the API."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from api.ready import wait_ready
from flowrec.localredis import free_port
from tests.envkit import clean_environment

REPO = Path(__file__).resolve().parent.parent.parent
RECIPE = REPO / "deploy" / "nginx" / "flowrec.conf"
KEY = "nginx-test-key"


def recipe_on(listen_port: int, api_port: int) -> str:
    """The recipe with its documented addresses moved to free ports (and nothing else changed)."""
    text = RECIPE.read_text()
    assert text.count("listen 80;") == 1 and text.count("server 127.0.0.1:8000;") == 1
    return text.replace("listen 80;", f"listen 127.0.0.1:{listen_port};").replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{api_port};")


@pytest.fixture
def proxied(redis_url, tmp_path) -> Iterator[str]:
    nginx = shutil.which("nginx")
    if nginx is None:
        pytest.skip("needs nginx (deploy/bootstrap.sh nginx)")
    api_port, proxy_port = free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "flowrec.cli", "serve", "--port", str(api_port), "--redis-url", redis_url, "--api-keys", KEY,
         "--spool-dir", str(tmp_path / "spool"), "--trusted-proxies", "127.0.0.1"],
        env=clean_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    (tmp_path / "flowrec.conf").write_text(recipe_on(proxy_port, api_port))
    temp = tmp_path / "nginx-temp"
    temp.mkdir()
    (tmp_path / "nginx.conf").write_text(f"""
user root;
daemon off;
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {tmp_path}/flowrec.conf;
}}
""")
    checked = subprocess.run([nginx, "-t", "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    proxy = subprocess.Popen([nginx, "-c", str(tmp_path / "nginx.conf")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{api_port}", server)
        wait_ready(f"http://127.0.0.1:{proxy_port}", proxy)
        yield f"http://127.0.0.1:{proxy_port}"
    finally:
        proxy.terminate()
        proxy.communicate(timeout=30)
        server.terminate()
        server.communicate(timeout=30)


def test_requests_pass_through_the_proxy(proxied):
    with httpx.Client(base_url=proxied, timeout=10) as client:
        assert client.get("/v1/trending").json()["items"] == []
        event = {"user_id": "u1", "item_id": "i1", "event_type": "click"}
        assert client.post("/v1/events", json=event, headers={"Authorization": f"Bearer {KEY}"}).status_code == 202
        refused = client.post("/v1/events", json=event, headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401 and refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["server"] == "nginx", "server_tokens off: no version number"


def test_the_proxy_refuses_oversized_heads_and_bodies_itself(proxied):
    with httpx.Client(base_url=proxied, timeout=10) as client:
        assert client.get("/healthz", headers={"X-Big": "a" * 9000}).status_code == 400  # one line over 8 KiB
        too_big = client.post("/v1/events", content=b"[" + b" " * (1 << 20) + b"]", headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        assert too_big.status_code == 413
        assert "nginx" in too_big.text.lower(), "nginx answered, the API never saw the body"


def test_the_proxy_limits_write_rates_per_client(proxied):
    event = {"user_id": "u1", "item_id": "i1", "event_type": "click"}
    burst = 120  # over the write zone's burst of 40 at 20/s: sent at once, not one after another,
    # so the zone cannot refill between them however slowly a loaded machine answers each
    start = threading.Barrier(burst)
    with httpx.Client(base_url=proxied, timeout=30, headers={"Authorization": f"Bearer {KEY}"}, limits=httpx.Limits(max_connections=burst)) as client:

        def post(_: int) -> int:
            start.wait()
            return client.post("/v1/events", json=event).status_code

        with ThreadPoolExecutor(burst) as pool:
            statuses = list(pool.map(post, range(burst)))
        assert client.get("/healthz").status_code == 200, "reads have their own budget"
    assert set(statuses) == {202, 429}  # some taken, the excess refused by the proxy, nothing else
