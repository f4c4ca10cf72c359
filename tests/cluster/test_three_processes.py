"""Three real `alertd serve` processes sharing one real redis-server behave as one alertd."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from tests.support.process import Child, alertd_serve
from tests.support.redis_server import RedisServer, redis_server

pytestmark = pytest.mark.anyio

PASSWORD = "cluster-pw-5a4b3c2d1e"


@asynccontextmanager
async def three(env: dict[str, str]) -> AsyncIterator[tuple[list[Child], aiohttp.ClientSession]]:
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        children = [await stack.enter_async_context(alertd_serve(env)) for _ in range(3)]
        for child in children:
            await wait_for_mode(session, child, "redis")
        yield children, session


async def status(session: aiohttp.ClientSession, child: Child) -> dict[str, Any]:
    async with session.get(f"{child.api_url}/v1/status") as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


async def wait_for_mode(session: aiohttp.ClientSession, child: Child, mode: str, within: float = 10.0) -> None:
    with anyio.fail_after(within):
        while True:
            if (await status(session, child))["mode"] == mode:
                return
            await anyio.sleep(0.05)


async def post(session: aiohttp.ClientSession, child: Child, provider: str, request_id: str) -> None:
    item = {"provider": provider, "request_id": request_id, "status": 503}
    async with session.post(f"{child.api_url}/v1/failures", json=item) as response:
        assert response.status == 202


def alerts(children: list[Child]) -> list[dict[str, Any]]:
    found = [line for child in children for line in child.lines if line.get("event") == "alert_fired"]
    return sorted(found, key=lambda line: line["upstream_failure"]["last_failure_at"])


def env_for(server: RedisServer, **extra: str) -> dict[str, str]:
    return {"ALERTD_REDIS_URL": server.url, "ALERTD_THRESHOLD": "5", "ALERTD_LOG_LEVEL": "debug", **extra}


async def test_five_failures_round_robin_give_exactly_one_alert_and_providers_are_independent(tmp_path: Path) -> None:
    with redis_server(tmp_path, password=PASSWORD) as server:
        async with three(env_for(server, ALERTD_COOLDOWN_SECONDS="60")) as (children, session):
            for i in range(4):
                await post(session, children[i % 3], "openai", f"o{i}")
            assert alerts(children) == []
            await post(session, children[4 % 3], "openai", "o4")
            await anyio.sleep(0.2)
            fired = alerts(children)
            assert len(fired) == 1, "the fifth failure cluster-wide alerts, once"
            assert fired[0]["tags"]["request_id"] == "o4"
            assert fired[0]["upstream_failure"]["count"] == 5
            assert "alertd_mode" not in fired[0]["tags"]
            for i in range(5, 14):  # within the cooldown: throttled everywhere
                await post(session, children[i % 3], "openai", f"o{i}")
            for i in range(5):  # another provider has its own window and cooldown
                await post(session, children[(i + 1) % 3], "bedrock", f"b{i}")
            await anyio.sleep(0.2)
            fired = alerts(children)
            assert [a["tags"]["provider"] for a in fired] == ["openai", "bedrock"]
            async with session.get(f"{children[0].api_url}/v1/providers/openai") as response:
                shared = await response.json()
            assert (shared["mode"], shared["failures_in_window"], shared["throttled_total"]) == ("redis", 14, 9)
            # Per-process counters stay per process: the three add up to the cluster's failures.
            counted = 0.0
            for child in children:
                async with session.get(f"{child.metrics_url}/metrics") as response:
                    text = await response.text()
                    assert "alertd_backend_up 1.0" in text
                for line in text.splitlines():
                    if line.startswith('alertd_failures_total{provider="openai"}'):
                        counted += float(line.split()[-1])
            assert counted == 14
            outputs = "\n".join(raw for child in children for raw in child.raw)
            assert PASSWORD not in outputs
            assert PASSWORD not in json.dumps([await status(session, child) for child in children])


async def test_sustained_outage_gives_one_alert_per_cooldown_cluster_wide(redis_srv: RedisServer) -> None:
    async with three(env_for(redis_srv, ALERTD_COOLDOWN_SECONDS="1")) as (children, session):
        sent = []
        with anyio.move_on_after(3.3):
            for i in range(10_000):
                await post(session, children[i % 3], "openai", str(i))
                sent.append(i)
                await anyio.sleep(0.05)
        await anyio.sleep(0.2)
        fired = alerts(children)
        assert 3 <= len(fired) <= 4, len(fired)
        triggers = [int(a["tags"]["request_id"]) for a in fired]
        assert triggers[0] == 4
        stamps = [epoch(a["upstream_failure"]["last_failure_at"]) for a in fired]
        for earlier, later in itertools.pairwise(stamps):
            assert 1.0 <= later - earlier < 1.5, "one alert per COOLDOWN, cluster-wide, on Redis's clock"
        for earlier, later, alert in zip(triggers, triggers[1:], fired[1:], strict=False):
            # Throttled hits since the previous alert, summed over the three processes.
            assert alert["upstream_failure"]["throttled_since_last_alert"] == later - earlier - 1
        senders = {id(child) for child in children for line in child.lines if line.get("event") == "alert_fired"}
        assert len(senders) >= 2, "whichever process gets the deciding failure sends the alert"


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def test_redis_killed_mid_run_processes_fall_back_then_return(redis_srv: RedisServer) -> None:
    async with three(env_for(redis_srv, ALERTD_COOLDOWN_SECONDS="60")) as (children, session):
        redis_srv.stop()
        for i in range(15):  # each process sees 5: each decides alone, and alerts (a duplicate beats a miss)
            await post(session, children[i % 3], "openai", f"o{i}")
        await anyio.sleep(0.2)
        fired = alerts(children)
        assert len(fired) == 3
        assert {a["tags"]["alertd_mode"] for a in fired} == {"fallback"}
        for child in children:
            assert (await status(session, child))["mode"] == "redis-fallback"
            async with session.get(f"{child.metrics_url}/readyz") as response:
                assert response.status == 200
            async with session.get(f"{child.metrics_url}/metrics") as response:
                assert "alertd_backend_up 0.0" in await response.text()
        redis_srv.start()
        for child in children:
            await wait_for_mode(session, child, "redis")
            assert [line["event"] for line in child.lines if line["event"].startswith("backend_")] == [
                "backend_down",
                "backend_up",
            ]
