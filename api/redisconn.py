"""A pipelined asyncio Redis connection for the API's reads.

Every request of the lookup path is one ``MGET``.  Instead of checking a
connection out of a pool per command (redis-py's asyncio client costs about
as much CPU per command as the rest of the request), all concurrent requests
share one connection: commands issued in the same event-loop tick are written
with one ``write`` and the replies, which Redis sends back in order, are
parsed by hiredis's C reader and handed to the waiting requests in that order.

Failure handling is deliberately blunt.  If the connection drops, or a
command gets no reply within ``command_timeout_s``, the connection is
aborted and every command waiting on it fails with
:class:`redis.ConnectionError` / :class:`redis.TimeoutError` (the API answers
503); the next command reconnects.  Nothing is retried here: reads are cheap
for the client to retry, and a silent retry would hide an outage from
``/readyz`` and the metrics.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from typing import Any, Sequence

import hiredis
import redis
from redis.connection import parse_url

log = logging.getLogger(__name__)

# More commands than this waiting on one connection means Redis is not keeping up:
# fail fast instead of queueing without bound.
MAX_PENDING = 10_000


def encode_command(args: Sequence[bytes | str | int]) -> bytes:
    """One command in RESP: ``*<argc>\\r\\n`` then ``$<len>\\r\\n<arg>\\r\\n`` per argument."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode("utf-8")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _tls_context(options: dict[str, Any]) -> ssl.SSLContext | None:
    """TLS settings of a ``rediss://`` URL (``ssl_ca_certs=``, ``ssl_cert_reqs=none``), else ``None``."""
    kind = options.get("connection_class")
    if kind is None or kind is redis.UnixDomainSocketConnection:
        return None
    if kind is not redis.SSLConnection:
        raise ValueError(f"unsupported Redis connection type {kind.__name__}")
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if str(options.get("ssl_cert_reqs", "required")).lower() in ("none", "optional"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _Connection(asyncio.Protocol):
    """One socket to Redis: a FIFO of waiting futures matched to replies in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.reader = hiredis.Reader(replyError=redis.ResponseError)
        self.pending: collections.deque[asyncio.Future] = collections.deque()
        self.outgoing: list[bytes] = []
        self.flush_scheduled = False
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, command: bytes) -> asyncio.Future:
        if self.closed:
            raise redis.ConnectionError("the Redis connection is closed")
        if len(self.pending) >= MAX_PENDING:
            raise redis.ConnectionError(f"more than {MAX_PENDING} Redis commands waiting: Redis is not keeping up")
        future = self.loop.create_future()
        self.pending.append(future)
        self.outgoing.append(command)
        if not self.flush_scheduled:
            # Everything sent in this loop tick goes out in one write.
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.outgoing and not self.closed:
            data = b"".join(self.outgoing)
            self.outgoing.clear()
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(redis.ConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not self.pending:
                self.fail(redis.ConnectionError("a reply from Redis that nothing asked for"))
                return
            future = self.pending.popleft()
            if future.done():  # its caller was cancelled; the reply is dropped
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(redis.ConnectionError(f"connection to Redis lost ({exc or 'closed by the server'})"))

    def fail(self, error: Exception) -> None:
        """Close the socket and fail every waiting command with ``error`` (a fresh copy each)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(type(error)(*error.args))


class PipelinedRedis:
    """Commands from many coroutines over one Redis connection (see the module docstring).

    ``url`` is a redis-py URL: ``redis://[user:password@]host:port/db``,
    ``rediss://`` (TLS; ``ssl_ca_certs=``, ``ssl_cert_reqs=none`` honoured) or
    ``unix:///path?db=0``.  Use it from one event loop only.
    """

    def __init__(self, url: str, connect_timeout_s: float = 2.0, command_timeout_s: float = 2.0) -> None:
        self.options = parse_url(url)
        self.tls = _tls_context(self.options)
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self._connection: _Connection | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._connection is not None and not self._connection.closed:
                return self._connection
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    if "path" in self.options:
                        _, connection = await loop.create_unix_connection(lambda: _Connection(loop), self.options["path"])
                    else:
                        host = self.options.get("host", "localhost")
                        _, connection = await loop.create_connection(lambda: _Connection(loop), host, int(self.options.get("port", 6379)), ssl=self.tls, server_hostname=host if self.tls else None)
                    if self.options.get("password"):
                        auth = ["AUTH", self.options["username"], self.options["password"]] if self.options.get("username") else ["AUTH", self.options["password"]]
                        await connection.send(encode_command(auth))
                    if int(self.options.get("db") or 0):
                        await connection.send(encode_command(["SELECT", int(self.options["db"])]))
            except (OSError, TimeoutError) as exc:
                raise redis.ConnectionError(f"cannot connect to Redis: {exc or type(exc).__name__}") from None
            self._connection = connection
            return connection

    async def execute(self, *args: bytes | str | int) -> Any:
        """Send one command and wait for its reply (error replies raise :class:`redis.ResponseError`)."""
        connection = self._connection
        if connection is None or connection.closed:
            connection = await self._connect()
        future = connection.send(encode_command(args))
        timer = connection.loop.call_later(self.command_timeout_s, self._timed_out, connection, future)
        try:
            return await future
        finally:
            timer.cancel()

    def _timed_out(self, connection: _Connection, future: asyncio.Future) -> None:
        if not future.done():
            # Replies after this one would be matched to the wrong commands: drop the connection.
            log.warning("Redis gave no reply within %.1fs; reconnecting", self.command_timeout_s)
            connection.fail(redis.TimeoutError(f"no reply from Redis within {self.command_timeout_s}s"))

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        return await self.execute("MGET", *keys)

    async def get(self, key: str) -> bytes | None:
        return await self.execute("GET", key)

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        flat = await self.execute("HGETALL", key)
        return dict(zip(flat[0::2], flat[1::2]))

    async def ping(self) -> bool:
        return await self.execute("PING") in (b"PONG", "PONG")

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.closed = True
            if self._connection.transport is not None:
                self._connection.transport.close()
            self._connection = None
