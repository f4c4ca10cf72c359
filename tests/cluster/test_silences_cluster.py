"""Three real `alertd serve` processes on one real redis-server: an API silence made on one holds on all three."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.cluster.test_three_processes import post, three
from tests.support.process import Child
from tests.support.redis_server import redis_server
from tests.support.sentry_server import LoopbackSentry

pytestmark = pytest.mark.anyio


async def call(
    session: aiohttp.ClientSession, method: str, child: Child, path: str, body: Any = None
) -> tuple[int, Any]:
    async with session.request(method, f"{child.api_url}{path}", json=body) as response:
        raw = await response.read()
        return response.status, await response.json() if raw else None


async def listed(session: aiohttp.ClientSession, child: Child) -> list[dict[str, Any]]:
    """GET /v1/silences on `child` (which also refreshes the copy its alerts are judged against)."""
    status, answer = await call(session, "GET", child, "/v1/silences")
    assert status == 200, answer
    silences: list[dict[str, Any]] = answer["silences"]
    return silences


def events(children: list[Child], event: str) -> list[dict[str, Any]]:
    return [line for child in children for line in child.lines if line.get("event") == event]


async def alerts_at_sentry(sentry: LoopbackSentry, count: int) -> list[dict[str, Any]]:
    """The alert events Sentry received (not alertd's own error reports), once there are `count` of them."""
    while True:
        found = [e for e in sentry.events if (e.get("tags") or {}).get("alertd_kind") == "upstream_failure"]
        if len(found) >= count:
            return found
        await sentry.wait_for_events(len(sentry.events) + 1)


async def test_a_silence_made_on_one_process_holds_on_the_other_two(tmp_path: Path, sentry: LoopbackSentry) -> None:
    env = {"ALERTD_THRESHOLD": "5", "ALERTD_COOLDOWN_SECONDS": "60", "SENTRY_DSN": sentry.dsn}
    with redis_server(tmp_path) as server:
        env["ALERTD_REDIS_URL"] = server.url
        async with three(env) as (children, session):
            maker, first, second = children

            body = {"providers": "bedrock-*", "duration_seconds": 3600, "comment": "AWS maintenance"}
            status, made = await call(session, "POST", maker, "/v1/silences", body)
            assert status == 201, made
            # Every process lists it: it lives in Redis, not in the process that made it.
            for child in children:
                assert [s["id"] for s in await listed(session, child)] == [made["id"]]

            # Five failures of a silenced provider, round-robin over the two other processes: the fifth
            # (on `first`) crosses the shared threshold, and the silence suppresses the alert there.
            for i in range(5):
                await post(session, (first, second)[i % 2], "bedrock-eu", f"b{i}")
            silenced = await first.wait_for("alert_silenced")
            assert silenced["provider"] == "bedrock-eu"
            assert silenced["silence_id"] == made["id"]
            assert events(children, "alert_fired") == []
            status, shown = await call(session, "GET", second, "/v1/providers/bedrock-eu")
            assert status == 200, shown
            assert shown["silenced_by"]["id"] == made["id"]

            # A provider the silence does not cover alerts as usual; it is the only Sentry event.
            for i in range(5):
                await post(session, (second, first)[i % 2], "openai", f"o{i}")
            await second.wait_for("alert_fired")
            [event] = await alerts_at_sentry(sentry, 1)
            assert event["tags"]["provider"] == "openai"

            # Expired through another process: the silence stops holding everywhere.
            status, _ = await call(session, "DELETE", second, f"/v1/silences/{made['id']}")
            assert status == 204
            for child in children:
                [shown_after] = await listed(session, child)
                assert shown_after["active"] is False
            for i in range(5):
                await post(session, (maker, first)[i % 2], "bedrock-us", f"u{i}")
            fired = await maker.wait_for("alert_fired")
            assert fired["tags"]["provider"] == "bedrock-us"
            at_sentry = await alerts_at_sentry(sentry, 2)
            assert [e["tags"]["provider"] for e in at_sentry] == ["openai", "bedrock-us"]
            assert len(events(children, "alert_silenced")) == 1
