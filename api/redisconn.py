"""A pipelined asyncio Redis connection for the API's reads.

Every request of the lookup path is one ``MGET``.  Instead of checking a
connection out of a pool per command (redis-py's asyncio client costs about
as much CPU per command as the rest of the request), all concurrent requests
share one connection: commands issued in the same event-loop tick are written
with one ``write`` and the replies, which Redis sends back in order, are
parsed by hiredis's C reader and handed to the waiting requests in that order.
``flowrec bench api`` measures it against ``redis.asyncio`` with hiredis, each
with the home-list shortcut: 111 against 279 us of API CPU per home-list
request (medians of 3 runs), the difference between about 9k and 3.6k
requests/s per core.

Failure handling is deliberately blunt.  Every command has one deadline,
``deadline_s``, for everything it waits on: a connection attempt in progress,
connecting (with ``AUTH`` and ``SELECT``), and its reply.  If the connection
drops, Redis refuses the credentials, or the deadline passes, every command
waiting on that connection fails with :class:`redis.ConnectionError` (or its
subclass :class:`redis.AuthenticationError`) / :class:`redis.TimeoutError`,
which the API answers with 503, and the socket is closed; the next command
reconnects.  Nothing is retried here: reads are cheap for the client to retry,
and a silent retry would hide an outage from ``/readyz`` and the metrics.
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


def reply_error(message: str) -> redis.ResponseError:
    """The exception for an error reply, by its code as redis-py names them.

    Refused credentials (``NOAUTH``, ``WRONGPASS``) and a Redis still loading
    its data (``LOADING``) are :class:`redis.ConnectionError` subclasses: Redis
    cannot serve this client now (503), not a bad command.
    """
    code = message.split(" ", 1)[0]
    if code in ("NOAUTH", "WRONGPASS"):
        return redis.AuthenticationError(message)
    if code == "LOADING":
        return redis.BusyLoadingError(message)
    return redis.ResponseError(message)


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
        self.reader = hiredis.Reader(replyError=reply_error)
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
    ``unix:///path?db=0``.  ``deadline_s`` bounds each command, connecting
    included.  Use it from one event loop only.
    """

    def __init__(self, url: str, deadline_s: float = 1.0) -> None:
        if deadline_s <= 0:
            raise ValueError("deadline_s must be positive")
        self.options = parse_url(url)
        self.tls = _tls_context(self.options)
        self.deadline_s = deadline_s
        self._connection: _Connection | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connect(self, deadline: float) -> _Connection:
        """The open connection, or a new one; raises :class:`redis.TimeoutError` at ``deadline`` (loop time)."""
        loop = asyncio.get_running_loop()
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        try:
            # Waiting for another command's connection attempt counts against this command's deadline.
            async with asyncio.timeout_at(deadline), self._connecting:
                if self._connection is None or self._connection.closed:
                    self._connection = await self._open(loop)
                return self._connection
        except TimeoutError:
            raise redis.TimeoutError(f"no connection to Redis within {self.deadline_s:g}s") from None

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        """Connect, ``AUTH`` and ``SELECT``; on any failure (the deadline's cancellation included) the socket is closed."""
        try:
            if "path" in self.options:
                _, connection = await loop.create_unix_connection(lambda: _Connection(loop), self.options["path"])
            else:
                host = self.options.get("host", "localhost")
                _, connection = await loop.create_connection(lambda: _Connection(loop), host, int(self.options.get("port", 6379)), ssl=self.tls, server_hostname=host if self.tls else None)
        except OSError as exc:
            raise redis.ConnectionError(f"cannot connect to Redis: {exc or type(exc).__name__}") from None
        try:
            if self.options.get("password"):
                auth = ["AUTH", self.options["username"], self.options["password"]] if self.options.get("username") else ["AUTH", self.options["password"]]
                try:
                    await connection.send(encode_command(auth))
                except redis.ResponseError as exc:
                    raise redis.AuthenticationError(f"Redis refused the credentials in the Redis URL: {exc}") from None
            if int(self.options.get("db") or 0):
                try:
                    await connection.send(encode_command(["SELECT", int(self.options["db"])]))
                except redis.ResponseError as exc:
                    raise redis.ConnectionError(f"Redis refused database {self.options['db']} of the Redis URL: {exc}") from None
        except BaseException as exc:
            # Without this every failed attempt would keep its socket (and a client slot in Redis).
            connection.fail(exc if isinstance(exc, redis.ConnectionError) else redis.ConnectionError("connection attempt abandoned"))
            raise
        return connection

    async def execute(self, *args: bytes | str | int) -> Any:
        """Send one command and wait for its reply (error replies raise :class:`redis.ResponseError`)."""
        connection = self._connection
        deadline = asyncio.get_running_loop().time() + self.deadline_s
        if connection is None or connection.closed:
            connection = await self._connect(deadline)
        future = connection.send(encode_command(args))
        timer = connection.loop.call_at(deadline, self._timed_out, connection, future)
        try:
            return await future
        finally:
            timer.cancel()

    def _timed_out(self, connection: _Connection, future: asyncio.Future) -> None:
        if not future.done():
            # Replies after this one would be matched to the wrong commands: drop the connection.
            log.warning("Redis gave no reply within %gs; reconnecting", self.deadline_s)
            connection.fail(redis.TimeoutError(f"no reply from Redis within {self.deadline_s:g}s"))

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        return await self.execute("MGET", *keys)

    async def get(self, key: str) -> bytes | None:
        return await self.execute("GET", key)

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        flat = await self.execute("HGETALL", key)
        return dict(zip(flat[0::2], flat[1::2]))

    async def hmget(self, key: str, fields: Sequence[str]) -> list[bytes | None]:
        return await self.execute("HMGET", key, *fields)

    async def ping(self) -> bool:
        return await self.execute("PING") in (b"PONG", "PONG")

    async def aclose(self) -> None:
        if self._connection is not None:
            self._connection.closed = True
            if self._connection.transport is not None:
                self._connection.transport.close()
            self._connection = None
