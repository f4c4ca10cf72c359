"""Silences in a running alertd: notifications stop, state goes on, and the first alert after is right."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest

from tests.support.daemon import FakeClock, RunningDaemon, running_daemon
from tests.support.sentry_api import TOKEN, LoopbackSentryApi
from tests.support.sentry_server import LoopbackSentry

pytestmark = pytest.mark.anyio


async def silence(daemon: RunningDaemon, **body: Any) -> dict[str, Any]:
    async with daemon.session.post(f"{daemon.api}/v1/silences", json=body) as response:
        assert response.status == 201, await response.text()
        answer: dict[str, Any] = await response.json()
        return answer


async def test_a_glob_silence_stops_alerts_for_the_providers_it_covers_only(sentry: LoopbackSentry) -> None:
    clock = FakeClock()
    env = {"ALERTD_THRESHOLD": "2", "SENTRY_DSN": sentry.dsn}
    async with running_daemon(env, clock=clock) as daemon:
        made = await silence(daemon, providers="open*", duration_seconds=3600, comment="incident 42")
        for provider in ("openai", "openrouter", "anthropic"):
            await daemon.post([{"provider": provider}] * 2)
        [event] = await sentry.wait_for_events(1)
        assert event["tags"]["provider"] == "anthropic"
        silenced = daemon.logged("alert_silenced")
        assert sorted(line["provider"] for line in silenced) == ["openai", "openrouter"]
        assert {line["silence_id"] for line in silenced} == {made["id"]}
        assert [line["tags"]["provider"] for line in daemon.logged("alert_fired")] == ["anthropic"]
        scraped = await daemon.scrape()
        assert 'alertd_alerts_silenced_total{provider="openai"} 1.0' in scraped
        assert 'alertd_alerts_total{provider="openai"} 0.0' in scraped
        assert 'alertd_provider_firing{provider="openai"} 1.0' in scraped  # state goes on
        status, body = await daemon.get_json("/v1/providers/openai")
        assert status == 200
        assert body["silenced_by"]["id"] == made["id"]
        assert body["silenced_by"]["comment"] == "incident 42"
        assert body["episode"]["state"] == "firing"
        status, body = await daemon.get_json("/v1/providers/anthropic")
        assert body["silenced_by"] is None
        # Expire it: the suppressed alert started the cooldown, so the next hit inside it is throttled...
        async with daemon.session.delete(f"{daemon.api}/v1/silences/{made['id']}") as response:
            assert response.status == 204
        await daemon.post([{"provider": "openai"}])
        assert len(daemon.logged("alert_fired")) == 1
        # ...and the first alert after the cooldown says what was held back.
        clock.advance(61)
        await daemon.post([{"provider": "openai"}])
        events = await sentry.wait_for_events(2)
        assert events[1]["tags"]["provider"] == "openai"
        assert "firing for 1m 1s" in events[1]["message"]
        assert "(1 more threshold hit throttled since the last alert)" in events[1]["message"]
        await anyio.sleep(0.2)
        assert len(sentry.events) == 2


async def test_a_silence_ends_by_itself_at_its_end(sentry: LoopbackSentry) -> None:
    env = {"ALERTD_THRESHOLD": "1", "ALERTD_COOLDOWN_SECONDS": "0", "SENTRY_DSN": sentry.dsn}
    async with running_daemon(env) as daemon:
        ends = time.time() + 1.0
        ends_at = datetime.fromtimestamp(ends, UTC).isoformat().replace("+00:00", "Z")
        await silence(daemon, providers="p", ends_at=ends_at, comment="short", created_by="test")
        await daemon.post([{"provider": "p"}])
        assert len(daemon.logged("alert_silenced")) == 1
        await anyio.sleep(max(0.0, ends - time.time()) + 0.05)
        await daemon.post([{"provider": "p"}])
        [event] = await sentry.wait_for_events(1)
        assert event["tags"]["provider"] == "p"
        async with daemon.session.get(f"{daemon.api}/v1/silences") as response:
            [listed] = (await response.json())["silences"]
        assert listed["active"] is False  # ended, still listed for an hour


async def test_a_silence_holds_back_the_sentry_resolution_until_it_ends(
    sentry: LoopbackSentry, api: LoopbackSentryApi
) -> None:
    env = {
        "ALERTD_THRESHOLD": "2",
        "ALERTD_RESOLVE_AFTER_SECONDS": "0.3",
        "SENTRY_DSN": sentry.dsn,
        "SENTRY_AUTH_TOKEN": TOKEN,
        "SENTRY_ORG": api.org,
        "SENTRY_API_URL": api.api_url,
    }
    async with running_daemon(env) as daemon:
        await daemon.post([{"provider": "a"}, {"provider": "a"}, {"provider": "b"}, {"provider": "b"}])
        await sentry.wait_for_events(2)
        ends = time.time() + 1.5
        ends_at = datetime.fromtimestamp(ends, UTC).isoformat().replace("+00:00", "Z")
        await silence(daemon, providers="a", ends_at=ends_at, comment="maintenance")
        [call] = await api.wait_for_calls(1)  # b's resolution goes through
        assert call.provider == "b"
        await daemon.wait_logged("alert_resolved", 2)
        [held] = daemon.logged("resolution_silenced")
        assert held["provider"] == "a"
        assert [c.provider for c in api.calls] == ["b"]  # nothing for a while the silence lasts
        calls = await api.wait_for_calls(2)  # the silence ended: the held-back resolution is sent
        assert calls[1].provider == "a"
        assert time.time() >= ends
        assert [line["provider"] for line in daemon.logged("resolution_sent_after_silence")] == ["a"]


async def test_bad_silences_are_refused_with_the_field_named() -> None:
    async with running_daemon({"ALERTD_INGEST_TOKEN": "t0ken-for-tests"}) as daemon:
        headers = {"Authorization": "Bearer t0ken-for-tests"}
        async with daemon.session.post(
            f"{daemon.api}/v1/silences", json={"providers": "p", "duration_seconds": 60}, headers=headers
        ) as response:
            assert response.status == 400
            assert (await response.json())["field"] == "comment"
        async with daemon.session.post(
            f"{daemon.api}/v1/silences", json={"providers": "p", "duration_seconds": 60, "comment": "c"}
        ) as response:
            assert response.status == 401
        async with daemon.session.delete(f"{daemon.api}/v1/silences/nope", headers=headers) as response:
            assert response.status == 404
