"""Guarantee 7: a 60-second soak of steady mixed load with alerts firing, against a real `alertd serve`
and a loopback Sentry, all on 127.0.0.1. Afterwards: flat RSS, no error log line, metrics that add up."""

from __future__ import annotations

import gzip
import json
import signal
import statistics
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import anyio
import pytest

from tests.reliability.helpers import metric_sum, outcomes, rss_mib, wait_until
from tests.support.process import Child, alertd_serve
from tests.support.sentry_server import LoopbackSentry

pytestmark = pytest.mark.anyio

SOAK_SECONDS = 60.0
CLIENTS = 6
PROVIDERS = 20
# Generous, in MiB: the median RSS of the last 15 s may exceed that of 10-25 s by at most this much.
RSS_GROWTH_MIB = 15.0


@dataclass
class Load:
    """Steady mixed load from one client session until `deadline`; counts what the clients saw."""

    session: aiohttp.ClientSession
    api: str
    deadline: float
    sent: Counter[str] = field(default_factory=Counter)

    async def post(self, data: bytes, content_type: str = "application/json", **headers: str) -> None:
        async with self.session.post(
            f"{self.api}/v1/failures", data=data, headers={"Content-Type": content_type, **headers}
        ) as response:
            body = await response.json()
            if response.status == 202:
                self.sent["accepted"] += body["accepted"]
            else:
                assert response.status == 400, body
                self.sent["rejected"] += 1

    async def client(self, n: int) -> None:
        i = 0
        while anyio.current_time() < self.deadline:
            i += 1
            provider = f"provider-{(n * 7 + i) % PROVIDERS}"
            event = {"provider": provider, "route": "/v1/chat", "status": 503, "api_key": f"sk-{n}-secret-key"}
            kind = i % 10
            if kind < 4:
                await self.post(json.dumps(event).encode())
            elif kind < 6:
                await self.post(json.dumps([event] * (1 + i % 20)).encode())
            elif kind == 6:
                await self.post(("\n".join([json.dumps(event)] * 3)).encode(), "application/x-ndjson")
            elif kind == 7:
                await self.post(gzip.compress(json.dumps([event] * 4).encode()), **{"Content-Encoding": "gzip"})
            elif kind == 8:
                await self.post(json.dumps([event, {"provider": ""}]).encode())  # rejected, all or nothing
            else:
                async with self.session.get(f"{self.api}/v1/providers/{provider}") as response:
                    assert response.status in (200, 404)
                self.sent["queries"] += 1
            await anyio.sleep(0.01)  # steady, not flat out: the machine is shared


async def sample_rss(
    child: Child, session: aiohttp.ClientSession, start: float, deadline: float
) -> list[tuple[float, float]]:
    """RSS of the child every 2.5 s, with a scrape each time (the metrics path is under load too)."""
    rss: list[tuple[float, float]] = []
    while anyio.current_time() < deadline:
        rss.append((anyio.current_time() - start, rss_mib(child.process.pid)))
        async with session.get(f"{child.metrics_url}/metrics") as response:
            assert response.status == 200
        await anyio.sleep(2.5)
    return rss


@pytest.mark.timeout(180)
async def test_a_60s_soak_keeps_memory_flat_logs_no_error_and_adds_up(sentry: LoopbackSentry) -> None:
    env = {
        "SENTRY_DSN": sentry.dsn,
        "ALERTD_THRESHOLD": "5",
        "ALERTD_COOLDOWN_SECONDS": "1",
        "ALERTD_API_KEY_SALT": "soak-salt",
        "ALERTD_LOG_LEVEL": "info",
    }
    rss: list[tuple[float, float]] = []
    async with alertd_serve(env) as child, aiohttp.ClientSession() as session:
        start = anyio.current_time()
        load = Load(session, child.api_url, start + SOAK_SECONDS)

        async def sampler() -> None:
            rss.extend(await sample_rss(child, session, start, load.deadline))

        async with anyio.create_task_group() as tasks:
            for n in range(CLIENTS):
                tasks.start_soon(load.client, n)
            tasks.start_soon(sampler)

        async def scrape() -> str:
            async with session.get(f"{child.metrics_url}/metrics") as response:
                return await response.text()

        async def delivered() -> bool:
            text = await scrape()
            return outcomes(text)["sent"] >= metric_sum(text, "alertd_alerts_total")

        await wait_until(delivered, within=30)
        text = await scrape()
        child.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            assert await child.process.wait() == 0
        stopped = await child.wait_for("alertd_stopped")

    sent = load.sent
    alerts = [line for line in child.lines if line["event"] == "alert_fired"]
    bad = [
        line
        for line in child.lines
        if line["level"] in ("warning", "error", "critical") and line["event"] != "alert_fired"
    ]
    early = statistics.median(mib for at, mib in rss if 10 <= at <= 25)
    late = statistics.median(mib for at, mib in rss if at >= SOAK_SECONDS - 15)
    print(f"soak: {dict(sent)}, {len(alerts)} alerts, RSS {early:.1f} -> {late:.1f} MiB")  # the figures, for -s
    assert sent["accepted"] > 10_000
    assert len(alerts) > 100
    assert bad == []
    assert late - early < RSS_GROWTH_MIB
    assert metric_sum(text, "alertd_failures_total") == sent["accepted"] == stopped["accepted_total"]
    assert metric_sum(text, "alertd_ingest_rejected_total") == sent["rejected"]
    assert metric_sum(text, "alertd_alerts_total") == len(alerts) == outcomes(text)["sent"] == len(sentry.events)
    assert sum(outcomes(text).values()) == outcomes(text)["sent"]
    assert all("secret-key" not in line for line in child.raw)
