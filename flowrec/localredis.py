"""Start a private redis-server on a free loopback port (demo, tests, benchmarks).

Used when no Redis URL is configured; never touches the shared 6379 instance.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from flowrec.config import CommandError

log = logging.getLogger(__name__)


class LocalRedisError(CommandError, RuntimeError):
    """A private redis-server cannot be started (the command line prints it as one line)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise LocalRedisError("redis-server not found; run `make setup` (installs Debian's redis-server) or set --redis-url")
    return path


@dataclass
class LocalRedis:
    """A redis-server child process; ``url`` is ready once :meth:`start` returns."""

    port: int = 0
    password: str | None = None
    process: subprocess.Popen | None = None
    workdir: Path | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> "LocalRedis":
        server = find_redis_server()  # before the folder is made: nothing to clean up when it is missing
        self.port = self.port or free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="flowrec-redis-"))
        cmd = [server, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        if self.password:
            cmd += ["--requirepass", self.password]
        # No terminal: the server may outlive the command that started it (flowrec run --keep-redis).
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise LocalRedisError(f"redis-server exited with status {self.process.returncode} on start (port {self.port})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n" if not self.password else f"AUTH {self.password}\r\nPING\r\n".encode())
                    if b"PONG" in conn.recv(64) or self.password:
                        log.info("local redis-server on port %d", self.port)
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise LocalRedisError(f"redis-server did not start on port {self.port} within {timeout_s:g} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "LocalRedis":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
