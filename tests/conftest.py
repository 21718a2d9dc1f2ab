"""Shared fixtures: a real redis-server per session on a free port, flushed per test."""

from __future__ import annotations

import pytest
import redis

from flowrec.localredis import LocalRedis


@pytest.fixture(scope="session")
def redis_server():
    server = LocalRedis().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    """URL of a private, empty Redis (never the shared 127.0.0.1:6379)."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
