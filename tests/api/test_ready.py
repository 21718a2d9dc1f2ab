"""Waiting for a server process to answer /readyz, against real processes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from api.ready import NotReady, wait_ready
from flowrec.localredis import free_port


def _static_server(root, port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_returns_once_readyz_answers_200(tmp_path):
    (tmp_path / "readyz").write_text("ok")
    port = free_port()
    server = _static_server(tmp_path, port)
    try:
        wait_ready(f"http://127.0.0.1:{port}", server, timeout_s=30)
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_server_that_never_gets_ready_times_out(tmp_path):
    port = free_port()
    server = _static_server(tmp_path, port)  # no readyz file: 404 forever
    try:
        with pytest.raises(NotReady, match="did not become ready within 1 s"):
            wait_ready(f"http://127.0.0.1:{port}", server, timeout_s=1)
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_an_exited_server_is_reported_with_its_output():
    crashed = subprocess.Popen([sys.executable, "-c", "import sys; print('port already in use'); sys.exit(3)"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    crashed.wait(timeout=30)
    with pytest.raises(NotReady, match=r"exited with 3 before it was ready:\nport already in use"):
        wait_ready(f"http://127.0.0.1:{free_port()}", crashed)
