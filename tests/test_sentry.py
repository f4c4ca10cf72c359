"""Alerts through the real sentry-sdk to a loopback Sentry that parses envelopes for real."""

from __future__ import annotations

import socket
from collections.abc import Sequence

import anyio
import pytest

from alertd.event import FailureEvent
from alertd.tracker import Recorded
from tests.support.daemon import running_daemon
from tests.support.sentry_server import PUBLIC_KEY, LoopbackSentry

pytestmark = pytest.mark.anyio

ENV = {"ALERTD_THRESHOLD": "2", "ALERTD_API_KEY_SALT": "pepper"}


async def test_one_event_per_alert_with_tags_fingerprint_and_context(sentry: LoopbackSentry) -> None:
    async with running_daemon(
        {**ENV, "SENTRY_DSN": sentry.dsn, "SENTRY_ENVIRONMENT": "staging", "SENTRY_RELEASE": "router@1.2.3"}
    ) as daemon:
        base = {"provider": "openai", "route": "/v1/chat", "api_key": "sk-proj-abcdefghijklmnopqrstuvwxyz"}
        await daemon.post({**base, "request_id": "req-1", "status": 500, "error_type": "http_5xx"})
        await daemon.post({**base, "request_id": "req-2", "status": 503, "error_type": "http_5xx"})
        [event] = await sentry.wait_for_events(1)
        [fired] = daemon.logged("alert_fired")
        assert event["event_id"] == fired["event_id"]
        assert event["level"] == "error"
        assert event["message"] == (
            "Upstream provider openai failed 2 times in the last 300s (threshold 2), opens a firing episode"
        )
        assert event["fingerprint"] == ["alertd-upstream-failure", "openai"]
        assert event["environment"] == "staging"
        assert event["release"] == "router@1.2.3"
        tags = event["tags"]
        assert tags["provider"] == "openai"
        assert tags["alertd_kind"] == "upstream_failure"
        assert tags["route"] == "/v1/chat"
        assert tags["request_id"] == "req-2"
        assert tags["status_code"] == "503"
        assert tags["error_type"] == "http_5xx"
        assert tags["api_key"].startswith("sk-proj-…")
        assert len(tags["api_key"]) == 8 + 1 + 12
        assert tags == fired["tags"]
        context = event["contexts"]["upstream_failure"]
        assert context == fired["upstream_failure"]
        assert [f["request_id"] for f in context["recent_failures"]] == ["req-1", "req-2"]
        assert sentry.auth_headers[0].count(PUBLIC_KEY) == 1
        with anyio.fail_after(5):
            while 'alertd_sentry_events_total{outcome="sent"} 1.0' not in await daemon.scrape():  # noqa: ASYNC110
                await anyio.sleep(0.02)


async def test_tags_of_one_alert_never_appear_on_another(sentry: LoopbackSentry) -> None:
    async with running_daemon({**ENV, "SENTRY_DSN": sentry.dsn}) as daemon:
        await daemon.post([{"provider": "a", "route": "/only-a", "request_id": "ra", "status": 500}] * 2)
        await daemon.post([{"provider": "b"}] * 2)
        events = await sentry.wait_for_events(2)
        by_provider = {e["tags"]["provider"]: e for e in events}
        assert by_provider["a"]["tags"]["route"] == "/only-a"
        assert set(by_provider["b"]["tags"]) == {"alertd_kind", "provider"}
        assert by_provider["b"]["fingerprint"] == ["alertd-upstream-failure", "b"]


async def test_tag_values_survive_sentry_normalization(sentry: LoopbackSentry) -> None:
    async with running_daemon({**ENV, "SENTRY_DSN": sentry.dsn}) as daemon:
        nasty = {"provider": "p", "route": "/" + "r" * 400, "request_id": "line1\nline2", "error_type": "  "}
        await daemon.post([nasty] * 2)
        [event] = await sentry.wait_for_events(1)
        tags = event["tags"]
        assert len(tags["route"]) == 200
        assert tags["request_id"] == "line1 line2"
        assert "error_type" not in tags


async def test_sdk_compresses_and_the_loopback_decodes(sentry: LoopbackSentry) -> None:
    async with running_daemon({**ENV, "SENTRY_DSN": sentry.dsn}) as daemon:
        await daemon.post([{"provider": "p"}] * 2)
        await sentry.wait_for_events(1)
    assert sentry.encodings[0] in ("br", "gzip")


def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_sentry_down_never_reaches_ingest_and_counts_network_errors() -> None:
    dsn = f"http://{PUBLIC_KEY}@127.0.0.1:{refused_port()}/1"
    async with running_daemon({**ENV, "SENTRY_DSN": dsn}) as daemon:
        for i in range(3):
            assert await daemon.post([{"provider": f"p{i}"}] * 2) == (202, {"accepted": 2})
        assert len(daemon.logged("alert_fired")) == 3
        with anyio.fail_after(10):
            while 'outcome="network_error"} 3.0' not in await daemon.scrape():  # noqa: ASYNC110
                await anyio.sleep(0.05)
        assert len(daemon.logged("sentry_event_undelivered")) == 3


async def test_rate_limited_and_server_errors_are_counted_by_outcome(sentry: LoopbackSentry) -> None:
    async with running_daemon({**ENV, "SENTRY_DSN": sentry.dsn}) as daemon:
        sentry.behaviour.status = 500
        await daemon.post([{"provider": "a"}] * 2)
        await sentry.wait_for_envelopes(1)
        sentry.behaviour.status = 429
        sentry.behaviour.headers = {"Retry-After": "60"}
        await daemon.post([{"provider": "b"}] * 2)
        await sentry.wait_for_envelopes(2)
        await daemon.post([{"provider": "c"}] * 2)  # dropped by the SDK's own backoff, never sent
        with anyio.fail_after(10):
            while True:
                text = await daemon.scrape()
                if 'outcome="http_error"} 1.0' in text and 'outcome="rate_limited"} 2.0' in text:
                    break
                await anyio.sleep(0.05)
        assert len(sentry.envelopes) == 2
        assert sentry.events == []


async def test_own_unexpected_errors_are_reported(sentry: LoopbackSentry) -> None:
    async with running_daemon({"SENTRY_DSN": sentry.dsn}) as daemon:
        tracker = daemon.listening.service.tracker

        async def broken(events: Sequence[FailureEvent]) -> Recorded:
            raise RuntimeError("tracker exploded")

        tracker.record = broken  # type: ignore[method-assign]
        status, body = await daemon.post({"provider": "p"})
        assert status == 500
        assert body["error"] == "internal_error"
        assert "exploded" not in body["detail"]
        [event] = await sentry.wait_for_events(1)
        assert event["exception"]["values"][0]["value"] == "tracker exploded"
        assert daemon.logged("internal_error")
