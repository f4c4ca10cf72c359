"""Guarantees 2 and 3: Sentry trouble never reaches the router, and no alert is dropped silently.

For each way a Sentry can fail, the same load runs against a healthy loopback Sentry first (the
same-run reference), then against the failing one: ingest stays within a generous ratio of the
reference, every alert is logged and counted, every undelivered one is counted by outcome, and the
SDK's queue stays bounded (alertd.sentry.QUEUE_SIZE).
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from alertd.sentry import QUEUE_SIZE
from tests.reliability.helpers import metric_sum, outcomes, wait_until
from tests.support.daemon import RunningDaemon, running_daemon
from tests.support.sentry_server import PUBLIC_KEY, LoopbackSentry, loopback_sentry

pytestmark = pytest.mark.anyio

ALERTS = 40
# One alert per request: threshold 1, and each request is a new provider.
ENV = {"ALERTD_THRESHOLD": "1", "ALERTD_LOG_LEVEL": "info", "ALERTD_SHUTDOWN_TIMEOUT_SECONDS": "0.5"}


@dataclass
class Fault:
    """A way for Sentry to fail, and the outcome alertd must count for each alert it loses."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hang: bool = False
    refuse: bool = False
    outcome: str | None = None  # None: delivery is pending, not lost, when the test looks


FAULTS = {
    "refusing-connections": Fault(refuse=True, outcome="network_error"),
    "never-answering": Fault(hang=True),
    "answering-in-2s": Fault(delay=2.0),
    "500": Fault(status=500, outcome="http_error"),
    "429-retry-after": Fault(status=429, headers={"Retry-After": "60"}, outcome="rate_limited"),
    "429-x-sentry-rate-limits": Fault(
        status=429, headers={"X-Sentry-Rate-Limits": "60:error;default:organization"}, outcome="rate_limited"
    ),
    "413": Fault(status=413, outcome="http_error"),
}


def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def daemon_with(fault: Fault, sentry: LoopbackSentry) -> AsyncIterator[RunningDaemon]:
    sentry.behaviour.status = fault.status
    sentry.behaviour.headers = fault.headers
    sentry.behaviour.delay = fault.delay
    sentry.behaviour.hang = fault.hang
    dsn = f"http://{PUBLIC_KEY}@127.0.0.1:{refused_port()}/1" if fault.refuse else sentry.dsn
    async with running_daemon({**ENV, "SENTRY_DSN": dsn}) as daemon:
        yield daemon


async def fire(daemon: RunningDaemon, count: int, prefix: str) -> float:
    """Post `count` failures, each alerting; returns the seconds it took."""
    start = time.perf_counter()
    for i in range(count):
        assert await daemon.post({"provider": f"{prefix}{i}"}) == (202, {"accepted": 1})
    return time.perf_counter() - start


async def settled(daemon: RunningDaemon, total: float) -> None:
    async def done() -> bool:
        return sum(outcomes(await daemon.scrape()).values()) >= total

    await wait_until(done, within=20)


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
async def test_sentry_trouble_never_reaches_ingest(fault: Fault) -> None:
    async with loopback_sentry() as healthy, daemon_with(Fault(), healthy) as daemon:
        reference = await fire(daemon, ALERTS, "ref")
        await settled(daemon, ALERTS)
        assert outcomes(await daemon.scrape())["sent"] == ALERTS
    async with loopback_sentry() as sentry, daemon_with(fault, sentry) as daemon:
        elapsed = await fire(daemon, ALERTS, "p")
        # Generous: the same load may take 10x the healthy run, plus a second for a noisy machine.
        assert elapsed < 10 * reference + 1.0, (elapsed, reference)
        assert len(daemon.logged("alert_fired")) == ALERTS
        text = await daemon.scrape()
        assert metric_sum(text, "alertd_alerts_total") == ALERTS
        assert metric_sum(text, "alertd_failures_total") == ALERTS
        if fault.outcome is not None:
            await settled(daemon, ALERTS)
            assert outcomes(await daemon.scrape()) == {
                **dict.fromkeys(("sent", "queue_overflow", "rate_limited", "network_error", "http_error"), 0.0),
                fault.outcome: ALERTS,
            }
            assert len(daemon.logged("sentry_event_undelivered")) == ALERTS
        else:
            # Still on their way: nothing counted as lost, the rest waits in the bounded queue.
            assert outcomes(await daemon.scrape())["queue_overflow"] == 0


async def test_a_hanging_sentry_fills_the_bounded_queue_then_counts_overflow(sentry: LoopbackSentry) -> None:
    """The SDK queue holds QUEUE_SIZE envelopes; one more is in flight; the rest overflow, counted."""
    sentry.behaviour.hang = True
    extra = 30
    async with running_daemon({**ENV, "SENTRY_DSN": sentry.dsn}) as daemon:
        await fire(daemon, 1, "first")

        async def taken() -> bool:  # the worker has taken the first envelope and hangs on it
            return bool(sentry.raw_bodies)

        await wait_until(taken)
        await fire(daemon, QUEUE_SIZE + extra, "p")
        counted = outcomes(await daemon.scrape())
        assert counted["queue_overflow"] == extra
        assert sum(counted.values()) == extra  # the others are queued or in flight, not lost
        assert len(daemon.logged("alert_fired")) == QUEUE_SIZE + extra + 1
        assert len(daemon.logged("sentry_event_undelivered")) == extra


async def test_the_next_alert_says_how_many_were_not_delivered(sentry: LoopbackSentry) -> None:
    env = {**ENV, "ALERTD_COOLDOWN_SECONDS": "0", "SENTRY_DSN": sentry.dsn}
    sentry.behaviour.status = 500
    async with running_daemon(env) as daemon:

        async def alert_and_settle(expected_outcomes: float) -> dict[str, object]:
            await daemon.post({"provider": "openai"})
            await settled(daemon, expected_outcomes)
            return dict(daemon.logged("alert_fired")[-1]["upstream_failure"])

        assert (await alert_and_settle(1))["undelivered_since_last_alert"] == 0
        assert (await alert_and_settle(2))["undelivered_since_last_alert"] == 1
        await daemon.post({"provider": "other"})  # another provider's losses are its own
        await settled(daemon, 3)
        assert daemon.logged("alert_fired")[-1]["upstream_failure"]["undelivered_since_last_alert"] == 0
        sentry.behaviour.status = 200
        assert (await alert_and_settle(4))["undelivered_since_last_alert"] == 2
        [delivered] = sentry.events
        assert delivered["contexts"]["upstream_failure"]["undelivered_since_last_alert"] == 2
        assert (await alert_and_settle(5))["undelivered_since_last_alert"] == 0  # reported once delivered


@pytest.mark.parametrize("burst", [QUEUE_SIZE, 4 * QUEUE_SIZE])
async def test_every_alert_of_a_burst_has_a_counted_fate(sentry: LoopbackSentry, burst: int) -> None:
    """Measures the SDK queue at our alert rates: a burst of `burst` alerts in one request (each of
    `burst` providers crosses its threshold at once) against a healthy loopback Sentry."""
    async with running_daemon({**ENV, "SENTRY_DSN": sentry.dsn}) as daemon:
        start = time.perf_counter()
        status, _ = await daemon.post([{"provider": f"p{i}"} for i in range(burst)])
        assert status == 202
        await settled(daemon, burst)
        seconds = time.perf_counter() - start
        counted = outcomes(await daemon.scrape())
        print(f"burst of {burst}: {counted} in {seconds:.2f}s")
        assert counted["sent"] + counted["queue_overflow"] == burst
        assert len(sentry.events) == counted["sent"]
        if burst <= QUEUE_SIZE:
            assert counted["queue_overflow"] == 0  # a burst that fits the queue is never dropped
        assert len(daemon.logged("sentry_event_undelivered")) == counted["queue_overflow"]
