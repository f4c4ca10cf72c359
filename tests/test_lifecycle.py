"""Firing episodes over real HTTP: an alert opens one, threshold hits keep it open, silence resolves it."""

from __future__ import annotations

from datetime import datetime

import anyio
import pytest

from tests.support.daemon import FakeClock, running_daemon
from tests.support.sentry_server import LoopbackSentry

pytestmark = pytest.mark.anyio


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


async def test_an_episode_opens_resolves_on_time_and_the_next_hit_opens_another() -> None:
    env = {
        "ALERTD_THRESHOLD": "2",
        "ALERTD_WINDOW_SECONDS": "30",
        "ALERTD_COOLDOWN_SECONDS": "600",
        "ALERTD_RESOLVE_AFTER_SECONDS": "0.4",
        # Far longer than the resolve delay: the resolution must not wait for the cleanup task.
        "ALERTD_CLEANUP_INTERVAL_SECONDS": "3600",
    }
    async with running_daemon(env) as daemon:
        await daemon.post([{"provider": "p"}] * 2)
        [fired] = daemon.logged("alert_fired")
        assert fired["message"].endswith("opens a firing episode")
        status, body = await daemon.get_json("/v1/providers/p")
        assert status == 200
        episode = body["episode"]
        assert episode["state"] == "firing"
        assert (episode["alerts"], episode["throttled"], episode["failures"]) == (1, 0, 2)
        assert episode["last_resolved_at"] is None
        assert 'alertd_provider_firing{provider="p"} 1.0' in await daemon.scrape()
        await daemon.post({"provider": "p"})  # a throttled hit: the deadline moves
        [resolved] = await daemon.wait_logged("alert_resolved")
        status, body = await daemon.get_json("/v1/providers/p")
        last_hit = epoch(body["last_failure_at"])
        lateness = epoch(resolved["resolved_at"]) - (last_hit + 0.4)
        # Never before the deadline (the pure-core tests pin that exactly); both times are logged to the
        # millisecond, so their difference may round to just below zero.
        assert -0.002 <= lateness < 1.0
        assert (resolved["provider"], resolved["alerts"], resolved["throttled"], resolved["failures"]) == ("p", 1, 1, 3)
        assert resolved["episode_started_at"] == fired["upstream_failure"]["last_failure_at"]
        assert body["episode"] == {"state": "ok", "last_resolved_at": resolved["resolved_at"]}
        scraped = await daemon.scrape()
        assert 'alertd_provider_firing{provider="p"} 0.0' in scraped
        assert 'alertd_alerts_resolved_total{provider="p"} 1.0' in scraped
        await anyio.sleep(0.5)
        assert len(daemon.logged("alert_resolved")) == 1  # exactly once
        await daemon.post([{"provider": "p"}] * 2)  # the resolution ended the 600 s cooldown
        fired_again = daemon.logged("alert_fired")
        assert len(fired_again) == 2
        assert fired_again[1]["message"].endswith(
            "opens a firing episode (1 more threshold hit throttled since the last alert)"
        )
        assert fired_again[1]["upstream_failure"]["episode"]["alert_number"] == 1


async def test_failures_below_the_threshold_do_not_keep_an_episode_open() -> None:
    env = {"ALERTD_THRESHOLD": "2", "ALERTD_WINDOW_SECONDS": "0.2", "ALERTD_RESOLVE_AFTER_SECONDS": "0.5"}
    async with running_daemon(env) as daemon:
        await daemon.post([{"provider": "p"}] * 2)
        for _ in range(4):
            await anyio.sleep(0.25)  # each failure alone in its window
            await daemon.post({"provider": "p"})
        [resolved] = await daemon.wait_logged("alert_resolved")
        assert resolved["failures"] >= 3
        assert resolved["alerts"] == 1
        assert resolved["throttled"] == 0


async def test_a_later_alert_says_how_long_the_episode_is_open_and_what_was_throttled() -> None:
    clock = FakeClock()
    env = {"ALERTD_THRESHOLD": "1", "ALERTD_COOLDOWN_SECONDS": "60", "ALERTD_RESOLVE_AFTER_SECONDS": "300"}
    async with running_daemon(env, clock=clock) as daemon:
        await daemon.post({"provider": "openai"})
        clock.advance(30)
        await daemon.post([{"provider": "openai"}] * 12)
        clock.advance(95)
        await daemon.post({"provider": "openai"})
        first, second = daemon.logged("alert_fired")
        assert "opens a firing episode" in first["message"]
        assert second["message"] == (
            "Upstream provider openai failed 14 times in the last 300s (threshold 1), firing for 2m 5s"
            " (12 more threshold hits throttled since the last alert)"
        )
        status, body = await daemon.get_json("/v1/providers/openai")
        assert status == 200
        assert (body["episode"]["alerts"], body["episode"]["throttled"], body["episode"]["failures"]) == (2, 12, 14)


async def test_an_episode_is_one_sentry_issue_with_the_kind_tag(sentry: LoopbackSentry) -> None:
    env = {"ALERTD_THRESHOLD": "1", "ALERTD_COOLDOWN_SECONDS": "0", "SENTRY_DSN": sentry.dsn}
    async with running_daemon(env) as daemon:
        await daemon.post({"provider": "p"})
        await daemon.post({"provider": "p"})
        events = await sentry.wait_for_events(2)
        assert {tuple(e["fingerprint"]) for e in events} == {("alertd-upstream-failure", "p")}
        assert {e["tags"]["alertd_kind"] for e in events} == {"upstream_failure"}
        numbers = sorted(e["contexts"]["upstream_failure"]["episode"]["alert_number"] for e in events)
        assert numbers == [1, 2]
