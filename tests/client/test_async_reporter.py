"""AsyncReporter against a real alertd over real sockets (TCP on 127.0.0.1 and a Unix socket)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from alertd.client import AsyncReporter
from tests.client.helpers import balanced, failures, free_port, silent_server, until
from tests.support.daemon import running_daemon

pytestmark = pytest.mark.anyio


async def test_one_line_reports_reach_alertd_and_fire_its_alert() -> None:
    async with running_daemon() as daemon, AsyncReporter(daemon.api) as alertd:
        for i in range(5):
            assert alertd.report("openai", route="/v1/chat/completions", request_id=f"r{i}", status=503)
        await until(lambda: failures(daemon, "openai") == 5)
        [fired] = daemon.logged("alert_fired")
        assert fired["tags"]["route"] == "/v1/chat/completions"
        assert fired["tags"]["status_code"] == "503"
        stats = alertd.stats()
        assert (stats.reported, stats.sent, stats.dropped, stats.errors) == (5, 5, 0, 0)


async def test_over_a_unix_socket_with_every_field_and_the_key_anonymized(tmp_path: Path) -> None:
    path = tmp_path / "alertd.sock"
    key = "sk-proj-0123456789abcdefghijklmnop"
    async with running_daemon({"ALERTD_LISTEN": f"unix:{path}", "ALERTD_THRESHOLD": "1"}) as daemon:
        async with AsyncReporter(f"unix:{path}") as alertd:
            alertd.report(
                "anthropic",
                route="/v1/messages",
                request_id="req-1",
                api_key=key,
                error_type="timeout",
                status=504,
                message="upstream timed out",
            )
        # aclose() flushed: the event is in alertd without waiting
        assert failures(daemon, "anthropic") == 1
        [fired] = daemon.logged("alert_fired")
        [recent] = fired["upstream_failure"]["recent_failures"]
        assert recent["request_id"] == "req-1"
        assert recent["error_type"] == "timeout"
        assert recent["api_key"].startswith("sk-proj-\u2026")
        assert key not in daemon.log_stream.getvalue()
        assert alertd.stats().sent == 1


async def test_a_batch_goes_at_500_events_without_waiting_for_the_timer() -> None:
    async with running_daemon() as daemon, AsyncReporter(daemon.api, interval=60.0) as alertd:
        for i in range(499):
            alertd.report("p", request_id=str(i))
        await anyio.sleep(0.3)
        assert (alertd.stats().queued, failures(daemon, "p")) == (499, 0)  # the timer is a minute away
        alertd.report("p", request_id="499")
        await until(lambda: failures(daemon, "p") == 500)
        assert alertd.stats().sent == 500


async def test_the_timer_sends_a_lone_event() -> None:
    async with running_daemon() as daemon, AsyncReporter(daemon.api, interval=0.05) as alertd:
        alertd.report("p")
        await until(lambda: failures(daemon, "p") == 1)


async def test_the_ingest_token_is_sent_and_a_wrong_one_is_counted_never_raised() -> None:
    async with running_daemon({"ALERTD_INGEST_TOKEN": "s3cret-token"}) as daemon:
        async with AsyncReporter(daemon.api, token="s3cret-token") as good:
            good.report("p")
        assert good.stats().sent == 1
        async with AsyncReporter(daemon.api, token="wrong-token") as bad:
            assert bad.report("p")
            assert await bad.flush()
        stats = bad.stats()
        assert (stats.sent, stats.dropped_rejected) == (0, 1)
        assert stats.last_error is not None
        assert "401" in stats.last_error
        assert "wrong-token" not in stats.last_error
        assert failures(daemon, "p") == 1


async def test_invalid_events_are_counted_locally_and_never_spoil_a_batch() -> None:
    async with running_daemon() as daemon, AsyncReporter(daemon.api) as alertd:
        bad: list[dict[str, Any]] = [
            {"provider": ""},
            {"provider": "a b"},
            {"provider": "zero\u200bwidth"},
            {"provider": "x" * 129},
            {"provider": "p", "status": 600},
            {"provider": "p", "status": "503"},
            {"provider": "p", "route": "r" * 1025},
            {"provider": None},
        ]
        alertd.report("p")
        for fields in bad:
            assert alertd.report(**fields) is False
        alertd.report("p")
        assert await alertd.flush()
        stats = alertd.stats()
        assert (stats.sent, stats.dropped_invalid, stats.errors) == (2, len(bad), 0)
        assert failures(daemon, "p") == 2
        assert balanced(stats)


async def test_alertd_down_costs_the_router_a_counter_and_nothing_else(tmp_path: Path) -> None:
    alertd = AsyncReporter(f"unix:{tmp_path}/nobody.sock", capacity=1000, interval=0.01, max_backoff=0.05)
    served = 0

    async def router_work() -> None:
        nonlocal served
        for _ in range(50):
            await asyncio.sleep(0.001)
            served += 1

    async with alertd:
        work = asyncio.ensure_future(router_work())
        for i in range(20_000):
            assert alertd.report("p", request_id=str(i)) is True
            if i % 1000 == 0:
                await asyncio.sleep(0.005)  # let the sender fail a few times meanwhile
        await work
        await until(lambda: alertd.stats().send_failures >= 3)
        stats = alertd.stats()
        assert served == 50
        assert stats.sent == 0
        assert stats.errors == 0
        assert stats.queued + stats.in_flight <= 1000 + 500
        assert stats.dropped_overflow >= 20_000 - 1000 - 500
        assert stats.last_error is not None
        assert stats.last_error.startswith("send failed")
        assert balanced(stats)
        await alertd.aclose(timeout=0.2)
    stats = alertd.stats()
    assert stats.queued == stats.in_flight == 0
    assert stats.dropped == 20_000
    assert alertd.report("p") is False  # after close: counted, not raised
    assert alertd.stats().dropped_closed == stats.dropped_closed + 1


async def test_aclose_is_bounded_when_alertd_hangs() -> None:
    async with silent_server() as (port, received):
        alertd = AsyncReporter(f"http://127.0.0.1:{port}", timeout=30.0)
        async with alertd:
            alertd.report("p")
            await until(lambda: bool(received))  # the sender is stuck waiting for an answer
            with anyio.fail_after(5):  # hang guard; the bound under test is the 0.2 s below
                await alertd.aclose(timeout=0.2)
        stats = alertd.stats()
        assert (stats.sent, stats.dropped_closed, stats.queued, stats.in_flight) == (0, 1, 0, 0)
        assert b"POST /v1/failures" in b"".join(received)
        assert b"application/x-ndjson" in b"".join(received)


async def test_alertd_restarting_mid_run_loses_nothing() -> None:
    port = free_port()
    env = {"ALERTD_LISTEN": f"127.0.0.1:{port}"}
    reported = 0
    async with AsyncReporter(f"http://127.0.0.1:{port}", interval=0.02, max_backoff=0.1) as alertd:

        async def steady(count: int) -> None:
            nonlocal reported
            for _ in range(count):
                alertd.report("p", request_id=str(reported))
                reported += 1
                await anyio.sleep(0.002)

        async with running_daemon(env) as first:
            await steady(100)
        # first is drained and gone; reports keep coming while nothing listens
        await steady(100)
        await until(lambda: alertd.stats().send_failures >= 1)
        async with running_daemon(env) as second:
            await steady(100)
            assert await alertd.flush(timeout=10)
        stats = alertd.stats()
        assert reported == 300
        assert stats.sent == 300
        assert failures(first, "p") + failures(second, "p") == 300
        assert failures(second, "p") >= 100
        assert stats.dropped == 0
        assert stats.send_failures >= 1


async def test_413_splits_the_batch_and_only_an_event_too_big_alone_is_dropped() -> None:
    async with running_daemon({"ALERTD_MAX_BODY_BYTES": "1024"}) as daemon, AsyncReporter(daemon.api) as alertd:
        for i in range(40):
            alertd.report("p", request_id=f"req-{i}")
        alertd.report("big", message="m" * 1024)
        assert await alertd.flush()
        stats = alertd.stats()
        assert (stats.sent, stats.dropped_rejected) == (40, 1)
        assert failures(daemon, "p") == 40
        assert failures(daemon, "big") == 0


async def test_report_from_other_threads_is_safe_and_wakes_the_sender() -> None:
    async with running_daemon() as daemon, AsyncReporter(daemon.api, interval=60.0, batch_size=100) as alertd:

        def burst() -> None:
            for _ in range(250):
                alertd.report("threaded")

        threads = [threading.Thread(target=burst) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            await anyio.to_thread.run_sync(thread.join)
        await until(lambda: failures(daemon, "threaded") >= 900)  # the 100-event trigger, not the timer
        assert await alertd.flush()
        assert failures(daemon, "threaded") == 1000
        assert alertd.stats().reported == 1000


async def test_a_bad_address_disables_the_reporter_without_raising() -> None:
    alertd = AsyncReporter("localhost:9180")  # the scheme is missing
    async with alertd:
        assert alertd.report("p")
        assert await alertd.flush()
    stats = alertd.stats()
    assert stats.dropped_rejected == 1
    assert stats.last_error is not None
    assert "bad alertd address" in stats.last_error


def test_report_without_a_running_loop_buffers_until_the_sender_starts() -> None:
    alertd = AsyncReporter("http://127.0.0.1:1")
    assert alertd.report("p")  # no loop in this thread: buffered, not raised
    assert alertd.stats().queued == 1


@pytest.mark.parametrize("limit", [0.0, 0.05])
async def test_aclose_returns_within_its_bound_even_when_it_races_the_wake_up(limit: float) -> None:
    """aclose() wakes the sender and may cancel it at once; the cancel must not be lost (3.11's wait_for)."""
    for _ in range(5):
        alertd = AsyncReporter("http://127.0.0.1:1", interval=3600, batch_size=10**6)  # port 1: refused
        async with alertd:
            for _ in range(100):
                alertd.report("p")
            with anyio.fail_after(5):  # hang guard
                await alertd.aclose(timeout=limit)
        stats = alertd.stats()
        assert (stats.dropped_closed, stats.queued, stats.in_flight) == (100, 0, 0)
