"""Waiting for a started ``flowrec serve`` process to answer ``/readyz`` (benchmarks, tests, scripts)."""

from __future__ import annotations

import subprocess
import time

import httpx

POLL_INTERVAL_S = 0.1


class NotReady(RuntimeError):
    """The server exited, or did not become ready in time; the message carries its output when it exited."""


def wait_ready(base_url: str, process: subprocess.Popen, timeout_s: float = 60.0, request_timeout_s: float = 2.0, path: str = "/readyz") -> None:
    """Poll ``base_url/readyz`` (or another ``path``, e.g. ``/healthz`` when Redis is meant to be down) until it answers 200.

    Raises :class:`NotReady` if ``process`` exits first (with whatever it
    wrote to a piped stdout or stderr) or after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            output = "".join(stream.read().decode(errors="replace") for stream in (process.stdout, process.stderr) if stream is not None)
            raise NotReady(f"the API exited with {process.returncode} before it was ready" + (f":\n{output}" if output else ""))
        try:
            if httpx.get(f"{base_url}{path}", timeout=request_timeout_s).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() >= deadline:
            raise NotReady(f"{base_url} did not become ready within {timeout_s:g} s")
        time.sleep(POLL_INTERVAL_S)
