"""A whole router on real sockets: its upstream fails, alertd is dead, and the router's answers do not change."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from alertd.client import AsyncReporter, UpstreamRequest, aiohttp_trace_config
from tests.client.helpers import balanced, failures, silent_server
from tests.support.daemon import running_daemon

pytestmark = pytest.mark.anyio

REPORTER = web.AppKey("reporter", AsyncReporter)
UPSTREAM = web.AppKey("upstream", aiohttp.ClientSession)
UPSTREAM_URL = web.AppKey("upstream_url", str)


def named(request: UpstreamRequest) -> str:
    return "bedrock"


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def upstream_app() -> web.Application:
    async def flaky(request: web.Request) -> web.Response:
        return web.json_response({"error": "overloaded"}, status=503)

    app = web.Application()
    app.router.add_post("/invoke", flaky)
    return app


def router_app(alertd_address: str, upstream: str) -> web.Application:
    """A minimal API router: one route that proxies to the provider, with the reporter wired in."""

    async def chat(request: web.Request) -> web.Response:
        async with request.app[UPSTREAM].post(request.app[UPSTREAM_URL] + "/invoke", json={}) as response:
            if response.status >= 500:
                return web.json_response({"error": "upstream failed"}, status=502)
            return web.json_response(await response.json())

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with AsyncReporter(alertd_address, capacity=200) as alertd:
            trace = aiohttp_trace_config(alertd, provider_of=named)
            async with aiohttp.ClientSession(trace_configs=[trace]) as session:
                app[REPORTER] = alertd
                app[UPSTREAM] = session
                yield

    app = web.Application()
    app[UPSTREAM_URL] = upstream
    app.router.add_post("/v1/chat/completions", chat)
    app.cleanup_ctx.append(lifecycle)
    return app


async def hammer(router: str, count: int) -> list[int]:
    async with aiohttp.ClientSession() as client:

        async def one() -> int:
            async with client.post(f"{router}/v1/chat/completions", json={}) as response:
                return response.status

        return list(await asyncio.gather(*(one() for _ in range(count))))


async def test_with_alertd_up_every_upstream_failure_is_reported() -> None:
    async with running_daemon() as daemon, serve(upstream_app()) as upstream:
        app = router_app(daemon.api, upstream)
        async with serve(app) as router:
            assert await hammer(router, 100) == [502] * 100
            assert await app[REPORTER].flush()
        assert failures(daemon, "bedrock") == 100


@pytest.mark.parametrize("alertd", ["refusing", "hanging"])
async def test_with_alertd_dead_the_router_answers_exactly_the_same(alertd: str, tmp_path: Path) -> None:
    async with serve(upstream_app()) as upstream, silent_server() as (port, _):
        address = f"unix:{tmp_path}/gone.sock" if alertd == "refusing" else f"http://127.0.0.1:{port}"
        app = router_app(address, upstream)
        async with serve(app) as router:
            statuses = await hammer(router, 1000)
            stats = app[REPORTER].stats()
        assert statuses == [502] * 1000
        assert stats.reported == 1000
        assert stats.sent == 0
        assert stats.errors == 0
        assert stats.dropped_overflow >= 1000 - 200 - 500  # bounded memory: the buffer holds 200
        assert balanced(stats)
    final = app[REPORTER].stats()
    assert final.dropped == 1000  # closed within its bound: every event counted, none raised
