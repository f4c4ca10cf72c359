"""The hooks report failed provider calls on their own: aiohttp TraceConfig, httpx transports and event hooks.

A real "provider" (an aiohttp server on 127.0.0.1) answers 200, 404, 503 or nothing at all; a closed port
refuses connections; a real alertd counts what the hooks reported.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import anyio
import httpx
import pytest
from aiohttp import web

from alertd.client import (
    AsyncReporter,
    Reporter,
    UpstreamRequest,
    aiohttp_trace_config,
    httpx_async_event_hooks,
    httpx_async_transport,
    httpx_event_hooks,
    httpx_transport,
)
from tests.client.helpers import failures, free_port
from tests.support.daemon import RunningDaemon, running_daemon

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def provider() -> AsyncIterator[str]:
    """A fake upstream provider on a real socket; yields its base URL."""

    async def answer(request: web.Request) -> web.Response:
        status = int(request.match_info["status"])
        return web.json_response({"status": status}, status=status)

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response()

    app = web.Application()
    app.router.add_get("/status/{status}", answer)
    app.router.add_get("/hang", hang)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def by_path(request: UpstreamRequest) -> str | None:
    """Name the provider by what went wrong, so that each case is counted on its own."""
    if request.path.startswith("/status/"):
        return "status-" + request.path.rsplit("/", 1)[1]
    return {"/hang": "hang", "/refused": "refused"}.get(request.path)


def expected(daemon: RunningDaemon) -> dict[str, int]:
    names = ("status-200", "status-404", "status-503", "status-500", "hang", "refused")
    return {name: failures(daemon, name) for name in names}


WANTED = {"status-200": 0, "status-404": 0, "status-503": 1, "status-500": 1, "hang": 1, "refused": 1}


async def test_aiohttp_trace_config_reports_5xx_timeouts_and_refused_connections() -> None:
    async with running_daemon({"ALERTD_THRESHOLD": "1"}) as daemon, provider() as base:
        refused = f"http://127.0.0.1:{free_port()}/refused"
        async with AsyncReporter(daemon.api) as alertd:
            trace = aiohttp_trace_config(alertd, provider_of=by_path)
            async with aiohttp.ClientSession(trace_configs=[trace]) as session:
                for status in (200, 404, 503, 500):
                    async with session.get(f"{base}/status/{status}") as response:
                        assert response.status == status  # the router sees the answer unchanged
                with pytest.raises(TimeoutError):
                    await session.get(f"{base}/hang", timeout=aiohttp.ClientTimeout(total=0.2))
                with pytest.raises(aiohttp.ClientConnectorError):
                    await session.get(refused)
                # a cancelled call (the router gave up) is not the provider's failure
                task = asyncio.ensure_future(session.get(f"{base}/hang"))
                await asyncio.sleep(0.1)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
        assert expected(daemon) == WANTED
        fired = {line["tags"]["provider"]: line for line in daemon.logged("alert_fired")}
        [timeout] = fired["hang"]["upstream_failure"]["recent_failures"]
        assert timeout["error_type"] == "timeout"
        assert timeout["route"] == "/hang"
        [refusal] = fired["refused"]["upstream_failure"]["recent_failures"]
        assert refusal["error_type"] == "connection_error"
        [server_error] = fired["status-503"]["upstream_failure"]["recent_failures"]
        assert (server_error["status"], server_error["error_type"]) == (503, "upstream_5xx")


async def test_the_default_provider_is_the_host_and_the_request_id_header_is_kept() -> None:
    async with running_daemon({"ALERTD_THRESHOLD": "1"}) as daemon, provider() as base:
        async with (
            AsyncReporter(daemon.api) as alertd,
            aiohttp.ClientSession(trace_configs=[aiohttp_trace_config(alertd)]) as session,
            session.get(f"{base}/status/502", headers={"X-Request-Id": "req-42"}) as response,
        ):
            assert response.status == 502
        assert failures(daemon, "127.0.0.1") == 1
        [fired] = daemon.logged("alert_fired")
        assert fired["tags"]["request_id"] == "req-42"
        assert fired["tags"]["route"] == "/status/502"


async def test_a_broken_provider_function_never_breaks_the_router_call() -> None:
    def broken(request: UpstreamRequest) -> str | None:
        raise RuntimeError("bug in the router's mapping")

    async with running_daemon() as daemon, provider() as base:
        async with AsyncReporter(daemon.api) as alertd:
            trace = aiohttp_trace_config(alertd, provider_of=broken)
            async with aiohttp.ClientSession(trace_configs=[trace]) as session, session.get(f"{base}/status/503") as r:
                assert r.status == 503
        assert alertd.stats().errors == 1
        assert alertd.stats().last_error == "internal error: RuntimeError: bug in the router's mapping"


async def test_httpx_transports_report_5xx_timeouts_and_refused_connections() -> None:
    async with running_daemon() as daemon, provider() as base:
        refused = f"http://127.0.0.1:{free_port()}/refused"
        with Reporter(daemon.api) as sync_alertd:

            def sync_calls() -> None:
                with httpx.Client(transport=httpx_transport(sync_alertd, provider_of=by_path)) as client:
                    for status in (200, 404, 503, 500):
                        assert client.get(f"{base}/status/{status}").status_code == status
                    with pytest.raises(httpx.TimeoutException):
                        client.get(f"{base}/hang", timeout=0.2)
                    with pytest.raises(httpx.ConnectError):
                        client.get(refused)

            await anyio.to_thread.run_sync(sync_calls)
            assert await anyio.to_thread.run_sync(sync_alertd.flush)
        assert expected(daemon) == WANTED

        async with AsyncReporter(daemon.api) as alertd:
            transport = httpx_async_transport(alertd, provider_of=by_path)
            async with httpx.AsyncClient(transport=transport) as client:
                for status in (200, 404, 503, 500):
                    assert (await client.get(f"{base}/status/{status}")).status_code == status
                with pytest.raises(httpx.TimeoutException):
                    await client.get(f"{base}/hang", timeout=0.2)
                with pytest.raises(httpx.ConnectError):
                    await client.get(refused)
        assert expected(daemon) == {name: 2 * count for name, count in WANTED.items()}


async def test_httpx_event_hooks_report_5xx_answers() -> None:
    async with running_daemon() as daemon, provider() as base:
        async with AsyncReporter(daemon.api) as alertd:
            async with httpx.AsyncClient(event_hooks=httpx_async_event_hooks(alertd, provider_of=by_path)) as client:
                for status in (200, 404, 503):
                    await client.get(f"{base}/status/{status}")

            def sync_calls() -> None:
                with httpx.Client(event_hooks=httpx_event_hooks(alertd, provider_of=by_path)) as client:
                    client.get(f"{base}/status/500")
                    client.get(f"{base}/status/200")

            await anyio.to_thread.run_sync(sync_calls)
        got = expected(daemon)
        assert (got["status-200"], got["status-404"], got["status-503"], got["status-500"]) == (0, 0, 1, 1)
