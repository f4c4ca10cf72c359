"""Episodes, tiers and per-provider rules hold cluster-wide: three real `alertd serve` on one real redis-server.

One episode resolves once over all processes (one `alert_resolved`, one PUT to the loopback Sentry Web
API), also when the process that opened it is killed; a rules file with tiers gives one alert per tier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from tests.cluster.test_three_processes import post, three
from tests.support.process import Child
from tests.support.redis_server import RedisServer
from tests.support.sentry_api import TOKEN, LoopbackSentryApi
from tests.support.sentry_server import LoopbackSentry

pytestmark = pytest.mark.anyio


def lifecycle_env(server: RedisServer, sentry: LoopbackSentry, api: LoopbackSentryApi) -> dict[str, str]:
    return {
        "ALERTD_REDIS_URL": server.url,
        "ALERTD_THRESHOLD": "5",
        "ALERTD_COOLDOWN_SECONDS": "60",
        "ALERTD_RESOLVE_AFTER_SECONDS": "1",
        "SENTRY_DSN": sentry.dsn,
        "SENTRY_AUTH_TOKEN": TOKEN,
        "SENTRY_ORG": api.org,
        "SENTRY_API_URL": api.api_url,
    }


def logged(children: list[Child], event: str) -> list[tuple[int, dict[str, Any]]]:
    return [(i, line) for i, child in enumerate(children) for line in child.lines if line.get("event") == event]


async def scrape(session: aiohttp.ClientSession, child: Child) -> str:
    async with session.get(f"{child.metrics_url}/metrics") as response:
        return await response.text()


async def wait_until_quiet(api: LoopbackSentryApi, children: list[Child]) -> None:
    """Past the first resolution, wait as long again as every process's resolve loop needs to act twice."""
    await api.wait_for_calls(1, within=20)
    await anyio.sleep(2.0)  # 4 x EPISODE_POLL: a duplicate would have come by now


async def test_three_processes_resolve_one_episode_once(
    redis_srv: RedisServer, sentry: LoopbackSentry, api: LoopbackSentryApi
) -> None:
    async with three(lifecycle_env(redis_srv, sentry, api)) as (children, session):
        for i in range(5):
            await post(session, children[i % 3], "openai", f"o{i}")
        [event] = await sentry.wait_for_events(1)
        api.unresolved.add(event["tags"]["provider"])  # Sentry opened the provider's issue
        for i in range(5, 8):  # threshold hits within the cooldown, on every process: throttled, extend it
            await post(session, children[i % 3], "openai", f"o{i}")
        await wait_until_quiet(api, children)
        resolved = logged(children, "alert_resolved")
        assert len(resolved) == 1, resolved
        resolver, line = resolved[0]
        assert (line["provider"], line["alerts"], line["throttled"], line["failures"]) == ("openai", 1, 3, 8)
        assert [(call.provider, call.status) for call in api.calls] == [("openai", 200)]
        assert api.unresolved == set()
        assert len(logged(children, "alert_fired")) == 1
        text = await scrape(session, children[resolver])
        assert 'alertd_alerts_resolved_total{provider="openai"} 1.0' in text
        assert 'alertd_provider_firing{provider="openai"} 0.0' in text
        for other in set(range(3)) - {resolver}:
            assert 'alertd_alerts_resolved_total{provider="openai"}' not in await scrape(session, children[other])
        async with session.get(f"{children[(resolver + 1) % 3].api_url}/v1/providers/openai") as response:
            shown = await response.json()
        assert shown["episode"]["state"] == "ok"
        assert shown["episode"]["last_resolved_at"] is not None, "last_resolved comes from Redis"


async def test_the_opener_killed_the_others_resolve_its_episode_once(
    redis_srv: RedisServer, sentry: LoopbackSentry, api: LoopbackSentryApi
) -> None:
    async with three(lifecycle_env(redis_srv, sentry, api)) as (children, session):
        for i in range(5):
            await post(session, children[i % 3], "openai", f"o{i}")
        await sentry.wait_for_events(1)
        [(opener, _)] = logged(children, "alert_fired")
        survivors = [child for i, child in enumerate(children) if i != opener]
        async with session.get(f"{survivors[0].api_url}/v1/providers/openai") as response:
            shown = await response.json()
        assert (shown["episode"]["state"], shown["episode"]["alerts"]) == ("firing", 1), "the episode is in Redis"
        children[opener].process.kill()
        for i, child in enumerate(survivors):  # each survivor sees a threshold hit: it knows the episode
            await post(session, child, "openai", f"s{i}")
        await wait_until_quiet(api, survivors)
        resolved = logged(survivors, "alert_resolved")
        assert len(resolved) == 1, resolved
        assert (resolved[0][1]["alerts"], resolved[0][1]["throttled"], resolved[0][1]["failures"]) == (1, 2, 7)
        assert len(api.calls) == 1


RULES = """
[[rule]]
providers = "openai"
cooldown_seconds = 60
tiers = [
  { threshold = 3, level = "warning" },
  { threshold = 6, level = "error" },
]
"""


async def test_a_rules_file_with_tiers_gives_one_alert_per_tier_cluster_wide(
    redis_srv: RedisServer, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES, encoding="utf-8")
    env = {"ALERTD_REDIS_URL": redis_srv.url, "ALERTD_THRESHOLD": "5", "ALERTD_RULES_FILE": str(rules)}
    async with three(env) as (children, session):
        for i in range(12):  # round-robin: each process sees 4, never a tier on its own
            await post(session, children[i % 3], "openai", f"o{i}")
        for i in range(4):  # other providers keep the defaults: THRESHOLD 5, no tiers
            await post(session, children[i % 3], "bedrock", f"b{i}")
        await anyio.sleep(0.2)
        fired = [line for _, line in logged(children, "alert_fired")]
        assert [(a["tags"]["provider"], a["tags"]["request_id"], a["tags"]["severity"]) for a in fired] == [
            ("openai", "o2", "warning"),
            ("openai", "o5", "error"),
        ]
        assert fired[1]["upstream_failure"]["episode"]["alert_number"] == 2
        assert fired[1]["upstream_failure"]["throttled_since_last_alert"] == 2
        async with session.get(f"{children[0].api_url}/v1/providers/openai") as response:
            shown = await response.json()
        assert (shown["alerts_total"], shown["throttled_total"]) == (2, 8)
        assert (shown["episode"]["alerts"], shown["episode"]["throttled"]) == (2, 8)
