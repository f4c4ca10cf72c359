"""Guarantee 1: an accepted event is never lost, and SIGTERM under load resets no request."""

from __future__ import annotations

import signal
from collections import Counter

import aiohttp
import anyio
import pytest

from tests.reliability.helpers import metric_sum
from tests.support.daemon import running_daemon
from tests.support.process import alertd_serve
from tests.support.sentry_server import LoopbackSentry

pytestmark = pytest.mark.anyio

CLIENTS = 16


async def test_every_202_is_counted_and_weighed_before_the_answer() -> None:
    """Concurrent clients: whenever a 202 arrives, the metrics and the window already hold its events."""
    async with running_daemon({"ALERTD_THRESHOLD": "10000", "ALERTD_LOG_LEVEL": "info"}) as daemon:
        answered = 0

        async def client(n: int) -> None:
            nonlocal answered
            for i in range(40):
                size = 1 + (n + i) % 7
                status, body = await daemon.post([{"provider": f"p{n % 4}"}] * size)
                assert status == 202
                answered += body["accepted"]
                seen = 0
                for provider in range(4):
                    _, stats = await daemon.get_json(f"/v1/providers/p{provider}")
                    seen += stats.get("failures_total", 0)
                assert seen >= answered  # never behind what was already answered
                assert metric_sum(await daemon.scrape(), "alertd_failures_total") >= answered

        async with anyio.create_task_group() as tasks:
            for n in range(8):
                tasks.start_soon(client, n)
        assert metric_sum(await daemon.scrape(), "alertd_failures_total") == answered
        assert daemon.listening.service.accepted_total == answered


async def test_sigterm_under_load_counts_every_202_and_resets_no_request(sentry: LoopbackSentry) -> None:
    sentry.behaviour.delay = 0.3  # alerts are still being delivered while the daemon drains
    env = {
        "SENTRY_DSN": sentry.dsn,
        "ALERTD_THRESHOLD": "3",
        "ALERTD_COOLDOWN_SECONDS": "0.2",
        "ALERTD_SHUTDOWN_TIMEOUT_SECONDS": "5",
        "ALERTD_LOG_LEVEL": "info",
    }
    accepted = 0
    results: Counter[str] = Counter()
    async with alertd_serve(env) as child:
        url = f"{child.api_url}/v1/failures"

        async def client(n: int) -> None:
            nonlocal accepted
            async with aiohttp.ClientSession() as session:
                for i in range(100_000):  # bounded; in practice it ends at the refusal after SIGTERM
                    batch = [{"provider": f"p{n % 5}", "request_id": f"{n}-{i}"}] * (1 + i % 3)
                    try:
                        async with session.post(url, json=batch) as response:
                            body = await response.json()
                            assert response.status == 202, body
                            accepted += body["accepted"]
                            results["202"] += 1
                    except aiohttp.ClientConnectorError:
                        results["refused"] += 1  # the listener is closed: a clean refusal
                        return
                    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                        results[f"reset: {type(exc).__name__}: {exc}"] += 1
                        return

        async with anyio.create_task_group() as tasks:
            for n in range(CLIENTS):
                tasks.start_soon(client, n)
            await anyio.sleep(1.5)
            child.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            assert await child.process.wait() == 0
        stopped = await child.wait_for("alertd_stopped")
    assert results["202"] > 100
    assert results["refused"] == CLIENTS, results  # every client ended on a refusal, none on a reset
    assert stopped["accepted_total"] == accepted
    assert [
        line for line in child.lines if line["level"] in ("error", "critical") and line["event"] != "alert_fired"
    ] == []
