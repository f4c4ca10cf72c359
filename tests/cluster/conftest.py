"""Fixtures for cluster mode: a real redis-server per test, and an async client to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.support.redis_server import RedisServer, redis_server


@pytest.fixture
def redis_srv(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


@pytest.fixture
async def redis_client(redis_srv: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_srv.url)
    try:
        yield client
    finally:
        await client.aclose()
