"""`flowrec serve` as a user runs it: a subprocess with flags, a catalog file and --demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import orjson

from api.app import create_app_from_env
from api.ready import wait_ready
from flowrec.localredis import LocalRedis, free_port
from tests.envkit import clean_environment
from transforms.catalog import CatalogItem

from .conftest import running


def test_flowrec_serve_demo_mode(tmp_path, redis_url):
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_bytes(b"".join(CatalogItem(f"i{k}", title=f"Product {k}", category="toys").to_json() + b"\n" for k in range(3)) + b"not json\n")
    spool = tmp_path / "spool"
    port = free_port()
    command = [sys.executable, "-m", "flowrec.cli", "serve", "--port", str(port), "--redis-url", redis_url, "--spool-dir", str(spool), "--catalog", str(catalog), "--demo", "--demo-key", "the-demo-key"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
        page = httpx.get(f"{base}/demo").text
        assert '"apiKey":"the-demo-key"' in page
        assert httpx.get(f"{base}/v1/catalog").json()["total"] == 3  # the bad line is skipped
        event = {"user_id": "u1", "item_id": "i1", "event_type": "click"}
        assert httpx.post(f"{base}/v1/events", json=event, headers={"Authorization": "Bearer the-demo-key"}).status_code == 202
        assert httpx.post(f"{base}/v1/events", json=event, headers={"Authorization": "Bearer other"}).status_code == 401
        [spooled] = spool.glob("events/events-*.jsonl")
        assert orjson.loads(spooled.read_bytes().splitlines()[0])[0]["item_id"] == "i1"
        assert httpx.get(f"{base}/openapi.json").json()["info"]["title"] == "flowrec API"
        assert httpx.get(f"{base}/docs").status_code == 200
    finally:
        server.terminate()
        output = server.communicate(timeout=15)[0].decode()
    assert f"http://127.0.0.1:{port}/demo" in output
    # A graceful shutdown on SIGTERM, exiting with the conventional 128 + signal number.
    assert "Application shutdown complete" in output
    assert server.returncode == 128 + signal.SIGTERM, output


def test_worker_factory_reads_the_environment(monkeypatch, tmp_path, redis_url, stopping_servers):
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_bytes(CatalogItem("w1", category="garden").to_json() + b"\n")
    for name in [n for n in os.environ if n.startswith("FLOWREC_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("FLOWREC_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("FLOWREC_API_KEYS", "k1,k2")
    monkeypatch.setenv("FLOWREC_CATALOG", str(catalog))
    monkeypatch.setenv("FLOWREC_DEMO_KEY", "demo")
    monkeypatch.setenv("FLOWREC_MAX_BODY_BYTES", "200")
    monkeypatch.setenv("FLOWREC_REDIS_DEADLINE_MS", "750")
    app = create_app_from_env()
    assert app.state.ctx.lookups.deadline_s == 0.75
    with running(app, stopping_servers) as base, httpx.Client(base_url=base) as client:
        assert client.get("/v1/catalog/categories").json() == [{"category": "garden", "items": 1}]
        assert '"apiKey":"demo"' in client.get("/demo").text
        event = {"user_id": "u1", "item_id": "i1", "event_type": "click"}
        for key in ("k1", "k2", "demo"):
            assert client.post("/v1/events", json=event, headers={"Authorization": f"Bearer {key}"}).status_code == 202
        assert client.post("/v1/events", json=[event] * 5, headers={"Authorization": "Bearer k1"}).status_code == 413


def test_flowrec_serve_reads_its_secrets_from_files(tmp_path):
    """`--redis-url-file` and `--api-keys-file`: the secrets work and stay off the process's command line."""
    password, key = f"pw-{os.urandom(8).hex()}", f"key-{os.urandom(8).hex()}"
    redis_server = LocalRedis(password=password).start()
    try:
        (tmp_path / "redis-url").write_text(redis_server.url + "\n")
        (tmp_path / "api-keys").write_text(f"# the write keys\n{key}\nanother-key\n")
        port = free_port()
        command = [sys.executable, "-m", "flowrec.cli", "serve", "--port", str(port), "--redis-url-file", str(tmp_path / "redis-url"),
                   "--api-keys-file", str(tmp_path / "api-keys"), "--spool-dir", str(tmp_path / "spool")]
        server = subprocess.Popen(command, env=clean_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base, server)  # ready = Redis answered through the password from the file
            cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
            assert password.encode() not in cmdline and key.encode() not in cmdline
            event = {"user_id": "u1", "item_id": "i1", "event_type": "click"}
            assert httpx.post(f"{base}/v1/events", json=event, headers={"Authorization": f"Bearer {key}"}).status_code == 202
            assert httpx.post(f"{base}/v1/events", json=event, headers={"Authorization": "Bearer the-comment"}).status_code == 401
        finally:
            server.terminate()
            server.communicate(timeout=15)
    finally:
        redis_server.stop()


def test_flowrec_serve_with_an_unreadable_secret_file_exits_2_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "flowrec.cli", "serve", "--api-keys-file", str(tmp_path / "absent")],
                          env=clean_environment(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == f"flowrec serve: error: argument --api-keys-file: cannot read {tmp_path / 'absent'}: No such file or directory"
