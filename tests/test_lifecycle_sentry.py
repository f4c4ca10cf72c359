"""The lifecycle as Sentry sees it: events open and repeat an issue, the Web API resolves it, over real sockets."""

from __future__ import annotations

import anyio
import pytest

from tests.support.daemon import FakeClock, RunningDaemon, running_daemon
from tests.support.sentry_api import TOKEN, LoopbackSentryApi
from tests.support.sentry_server import LoopbackSentry

pytestmark = pytest.mark.anyio


def lifecycle_env(sentry: LoopbackSentry, api: LoopbackSentryApi, resolve_after: str = "0.3") -> dict[str, str]:
    return {
        "ALERTD_THRESHOLD": "2",
        "ALERTD_COOLDOWN_SECONDS": "600",
        "ALERTD_RESOLVE_AFTER_SECONDS": resolve_after,
        "SENTRY_DSN": sentry.dsn,
        "SENTRY_AUTH_TOKEN": TOKEN,
        "SENTRY_ORG": api.org,
        "SENTRY_API_URL": api.api_url,
    }


async def counted(daemon: RunningDaemon, sample: str, within: float = 15.0) -> None:
    with anyio.fail_after(within):
        while sample not in await daemon.scrape():  # noqa: ASYNC110 - a scrape is the thing observed
            await anyio.sleep(0.02)


async def test_an_outage_opens_one_issue_resolves_it_once_and_regresses(
    sentry: LoopbackSentry, api: LoopbackSentryApi
) -> None:
    async with running_daemon(lifecycle_env(sentry, api)) as daemon:
        await daemon.post([{"provider": 'open"ai'}] * 2)
        [event] = await sentry.wait_for_events(1)
        api.unresolved.add(event["tags"]["provider"])  # Sentry opened the provider's issue
        [call] = await api.wait_for_calls(1)
        assert (call.provider, call.status) == ('open"ai', 200)
        assert api.unresolved == set()
        assert api.refused == []
        [resolved] = daemon.logged("alert_resolved")
        assert resolved["provider"] == 'open"ai'
        await counted(daemon, 'alertd_sentry_api_requests_total{outcome="resolved"} 1.0')
        await daemon.post([{"provider": 'open"ai'}] * 2)  # the next outage: a regression in Sentry
        events = await sentry.wait_for_events(2)
        assert events[1]["fingerprint"] == events[0]["fingerprint"]
        assert "opens a firing episode" in events[1]["message"]
        await api.wait_for_calls(2)
        assert len(daemon.logged("alert_resolved")) == 2
        await anyio.sleep(0.5)
        assert len(api.calls) == 2  # one PUT per episode


async def test_a_failing_web_api_never_holds_up_ingest_or_alerts(
    sentry: LoopbackSentry, api: LoopbackSentryApi
) -> None:
    api.behaviour.status = 500
    async with running_daemon(lifecycle_env(sentry, api)) as daemon:
        await daemon.post([{"provider": "a"}] * 2)
        await api.wait_for_calls(2)  # the first call and one retry after 1 s
        await counted(daemon, 'alertd_sentry_api_requests_total{outcome="retryable_error"} 2.0')
        status, body = await daemon.post([{"provider": "b"}] * 2)
        assert (status, body["accepted"]) == (202, 2)
        events = await sentry.wait_for_events(2)
        assert {e["tags"]["provider"] for e in events} == {"a", "b"}
        api.behaviour.status = None
        api.unresolved.add("a")
        with anyio.fail_after(15):
            while "a" in api.unresolved:  # noqa: ASYNC110 - the server's state is the thing observed
                await anyio.sleep(0.05)


async def test_a_hanging_web_api_never_holds_up_ingest_or_alerts(
    sentry: LoopbackSentry, api: LoopbackSentryApi
) -> None:
    api.behaviour.status = None
    api.behaviour.script = ["hang"]
    async with running_daemon(lifecycle_env(sentry, api)) as daemon:
        await daemon.post([{"provider": "a"}] * 2)
        await api.wait_for_calls(1)  # hanging now
        for _ in range(5):
            status, _ = await daemon.post([{"provider": "b"}] * 2)
            assert status == 202
        events = await sentry.wait_for_events(2)
        assert {e["tags"]["provider"] for e in events} == {"a", "b"}
        # The resolver's 10 s timeout ends the hanging call; it is counted and retried.
        await counted(daemon, 'alertd_sentry_api_requests_total{outcome="timeout"} 1.0', within=20)
        await api.wait_for_calls(2)


async def test_a_resolution_found_with_the_next_outage_still_reaches_sentry(
    sentry: LoopbackSentry, api: LoopbackSentryApi
) -> None:
    clock = FakeClock()
    # With a fake clock the resolve task sleeps (for real) until a deadline the fake clock passes at once:
    # the next failures find the episode over, resolve it and open the next one in one batch.
    env = lifecycle_env(sentry, api, resolve_after="300")
    async with running_daemon(env, clock=clock) as daemon:
        await daemon.post([{"provider": "p"}] * 2)
        [first] = await sentry.wait_for_events(1)
        api.unresolved.add(first["tags"]["provider"])
        clock.advance(301)
        await daemon.post([{"provider": "p"}] * 2)
        [resolved] = daemon.logged("alert_resolved")
        assert resolved["provider"] == "p"
        [call] = await api.wait_for_calls(1)  # tried although the next episode opened at once
        assert (call.provider, call.status) == ("p", 200)
        events = await sentry.wait_for_events(2)
        assert "opens a firing episode" in events[1]["message"]
