"""The API's pipelined Redis connection, against real redis-server processes."""

from __future__ import annotations

import asyncio
import ssl
import time

import pytest
import redis

from api.redisconn import PipelinedRedis, encode_command
from flowrec.localredis import LocalRedis


def test_encode_command_is_resp():
    assert encode_command(["MGET", "a", b"bc", 7]) == b"*4\r\n$4\r\nMGET\r\n$1\r\na\r\n$2\r\nbc\r\n$1\r\n7\r\n"
    assert encode_command(["GET", "é"]) == b"*2\r\n$3\r\nGET\r\n$2\r\n\xc3\xa9\r\n"


def test_concurrent_commands_get_their_own_replies(redis_url, redis_client):
    redis_client.mset({f"k{i}": f"v{i}" for i in range(300)})
    redis_client.hset("h", mapping={"a": "1", "b": "2"})

    async def main():
        conn = PipelinedRedis(redis_url)
        try:
            singles = await asyncio.gather(*(conn.get(f"k{i}") for i in range(300)))
            pairs = await asyncio.gather(*(conn.mget([f"k{i}", "missing", f"k{299 - i}"]) for i in range(300)))
            return singles, pairs, await conn.hgetall("h"), await conn.ping()
        finally:
            await conn.aclose()

    singles, pairs, hash_, pong = asyncio.run(main())
    assert singles == [f"v{i}".encode() for i in range(300)]
    assert pairs == [[f"v{i}".encode(), None, f"v{299 - i}".encode()] for i in range(300)]
    assert hash_ == {b"a": b"1", b"b": b"2"} and pong is True


def test_error_replies_raise_and_the_connection_stays_usable(redis_url, redis_client):
    redis_client.set("text", "abc")

    async def main():
        conn = PipelinedRedis(redis_url)
        try:
            results = await asyncio.gather(conn.execute("INCR", "text"), conn.get("text"), return_exceptions=True)
            return results, await conn.get("text")
        finally:
            await conn.aclose()

    (error, value), after = asyncio.run(main())
    assert isinstance(error, redis.ResponseError)
    assert value == b"abc" and after == b"abc"


def test_a_slow_reply_times_out_and_the_next_command_reconnects(redis_url, redis_client):
    redis_client.set("k", "v")

    async def main():
        conn = PipelinedRedis(redis_url, deadline_s=0.2)
        try:
            waiting = await asyncio.gather(conn.execute("BLPOP", "empty-list", "5"), conn.get("k"), return_exceptions=True)
            return waiting, await conn.get("k")
        finally:
            await conn.aclose()

    (blocked, queued_behind), after = asyncio.run(main())
    assert isinstance(blocked, redis.TimeoutError)
    assert isinstance(queued_behind, redis.TimeoutError)  # its reply could no longer be matched
    assert after == b"v"


def test_survives_a_redis_restart():
    server = LocalRedis().start()
    port = server.port

    async def main():
        conn = PipelinedRedis(server.url)
        try:
            await conn.execute("SET", "k", "before")
            assert await conn.get("k") == b"before"
            server.stop()
            with pytest.raises(redis.ConnectionError):
                await conn.get("k")
            with pytest.raises(redis.ConnectionError):  # nothing listens: a clear error, not a hang
                await conn.get("k")
            restarted = LocalRedis(port=port).start()
            try:
                await conn.execute("SET", "k", "after")
                return await conn.get("k")
            finally:
                restarted.stop()
        finally:
            await conn.aclose()

    try:
        assert asyncio.run(main()) == b"after"
    finally:
        server.stop()


def test_password_and_database_from_the_url():
    with LocalRedis(password="s3cret") as server:
        sync = redis.Redis.from_url(server.url.replace("/0", "/3"))
        sync.set("k", "in-db-3")
        sync.close()

        async def main():
            conn = PipelinedRedis(server.url.replace("/0", "/3"))
            try:
                return await conn.get("k")
            finally:
                await conn.aclose()

        assert asyncio.run(main()) == b"in-db-3"


def test_tls_urls_get_a_tls_context():
    assert PipelinedRedis("redis://127.0.0.1:6379/0").tls is None
    verified = PipelinedRedis("rediss://cache.example:6380/0").tls
    assert verified is not None and verified.check_hostname and verified.verify_mode == ssl.CERT_REQUIRED
    unverified = PipelinedRedis("rediss://cache.example:6380/0?ssl_cert_reqs=none").tls
    assert unverified is not None and unverified.verify_mode == ssl.CERT_NONE


def test_refused_credentials_raise_connection_errors_and_close_each_socket():
    with LocalRedis(password="right") as server:

        async def attempts(url: str) -> list[BaseException]:
            conn = PipelinedRedis(url)
            try:
                return await asyncio.gather(*(conn.get("k") for _ in range(50)), return_exceptions=True)
            finally:
                await conn.aclose()

        admin = redis.Redis.from_url(server.url)
        try:
            wrong = asyncio.run(attempts(server.url.replace("right", "wrong")))
            missing = asyncio.run(attempts(server.url.replace(":right@", "")))  # no AUTH: Redis answers NOAUTH
            # Only the admin connection stays: no failed attempt kept its socket (Redis may see the
            # last close a moment later, so wait for it a little; 100 leaked sockets never close).
            waited = 0
            while (clients := admin.info("clients")["connected_clients"]) > 1 and waited < 50:
                time.sleep(0.1)
                waited += 1
        finally:
            admin.close()
    assert all(isinstance(e, redis.AuthenticationError) for e in wrong), wrong[:3]
    assert all(isinstance(e, redis.AuthenticationError) for e in missing), missing[:3]
    assert clients == 1
