"""Group commit in FailoverTracker, against a real redis-server: batches that arrive while a call is in flight
are decided together in one call, and each gets exactly what it would have got alone; a hung or cancelled
call decides the group locally and never leaves the queue stuck.
"""

from __future__ import annotations

import asyncio
import functools
import io
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from alertd.event import FailureEvent
from alertd.logs import make_logger
from alertd.metrics import BackendMetrics
from alertd.redis_tracker import Decision, FailoverTracker, RedisTracker
from alertd.tracker import MemoryTracker, Recorded
from alertd.window import Rule
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio


class Tracked:
    """A FailoverTracker connected to the test's Redis, counting the calls it makes."""

    def __init__(self, tracker: FailoverTracker, registry: CollectorRegistry) -> None:
        self.tracker = tracker
        self.registry = registry
        self.calls: list[int] = []  # per call: how many failures it decided
        decide = tracker.shared.decide

        async def counting(
            counts: Mapping[str, int], now: float | None = None, rules: Mapping[str, Rule] | None = None
        ) -> dict[str, Decision]:
            self.calls.append(sum(counts.values()))
            return await decide(counts, now, rules)

        tracker.shared.decide = counting  # type: ignore[method-assign]

    def errors(self, reason: str) -> float:
        value = self.registry.get_sample_value("alertd_backend_errors_total", {"reason": reason})
        return 0.0 if value is None else value


@asynccontextmanager
async def failover(server: RedisServer, rule: Rule, prefix: str, redis_timeout: float = 0.25) -> AsyncIterator[Tracked]:
    # As make_client builds it: no retries of the client's own.
    options: dict[str, Any] = {"socket_timeout": redis_timeout, "socket_connect_timeout": redis_timeout}
    client = Redis.from_url(server.url, retry=Retry(NoBackoff(), 0), **options)
    shared = RedisTracker(client, rule, MemoryTracker(rule, 100), prefix=prefix)
    registry = CollectorRegistry()
    log = make_logger("info", "json", stream=io.StringIO())
    tracker = FailoverTracker(shared, BackendMetrics(registry), log, timeout=redis_timeout, details={})
    async with anyio.create_task_group() as tasks:
        await tasks.start(tracker.run)
        assert tracker.mode == "redis"
        yield Tracked(tracker, registry)
        tasks.cancel_scope.cancel()


async def until(condition: Callable[[], bool]) -> None:
    """Wait for the tracker's queue to reach a state (it has no event to wait on)."""
    while not condition():  # noqa: ASYNC110 - polled: the queue's state has no event
        await anyio.sleep(0.01)


def record(provider: str, request_id: str) -> FailureEvent:
    return FailureEvent(provider=provider, request_id=request_id)


def batches(n: int) -> list[list[FailureEvent]]:
    """n ingest batches: mostly one event, every 7th three events of two providers (p0 twice)."""
    out = []
    for i in range(n):
        if i % 7 == 3:
            out.append([record("p0", f"{i}a"), record("p1", f"{i}b"), record("p0", f"{i}c")])
        else:
            out.append([record(f"p{i % 3}", f"{i}")])
    return out


def verdicts(result: Recorded) -> list[tuple[str, str | None, int, int, bool]]:
    return [(t.provider, t.event.request_id, t.count, t.throttled_since_last, t.fallback) for t in result.triggers]


async def concurrently(calls: Sequence[Callable[[], Awaitable[Recorded]]]) -> list[Recorded]:
    """Start every call in order, all before any Redis reply can arrive; their results in that order."""
    results: list[Recorded | None] = [None] * len(calls)

    async def run(i: int) -> None:
        results[i] = await calls[i]()

    async with anyio.create_task_group() as tasks:
        for i in range(len(calls)):
            tasks.start_soon(run, i)
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


@pytest.mark.parametrize("cooldown", [0.0, 60.0])
async def test_concurrent_batches_share_calls_and_get_what_they_would_alone(
    redis_srv: RedisServer, cooldown: float
) -> None:
    rule = Rule(threshold=5, window=300, cooldown=cooldown)
    work = batches(60)
    pure = MemoryTracker(rule, 100)
    expected = [pure.record_now(events) for events in work]
    async with failover(redis_srv, rule, "alone:") as alone:
        one_by_one = [await alone.tracker.record(events) for events in work]
    async with failover(redis_srv, rule, "grouped:") as grouped:
        together = await concurrently([functools.partial(grouped.tracker.record, events) for events in work])
        # The first batch's call is in flight while the 59 others arrive: they make one call together.
        assert grouped.calls == [1, sum(len(events) for events in work) - 1]
        assert not grouped.tracker._leading
        assert grouped.tracker._waiting == []
    assert len(alone.calls) == 60
    for i, (want, alone_result, grouped_result) in enumerate(zip(expected, one_by_one, together, strict=True)):
        assert verdicts(grouped_result) == verdicts(alone_result) == verdicts(want), i
        assert grouped_result.failures == Counter(e.provider for e in work[i]), i
        assert grouped_result.admitted == alone_result.admitted, i
    assert any(result.triggers for result in together[1:]), "alerts decided in the group went back to their batch"

    def throttled(results: list[Recorded]) -> Counter[str]:
        total: Counter[str] = Counter()
        for result in results:
            total.update(result.throttled)
        return total

    assert throttled(together) == throttled(one_by_one) == throttled(expected)
    if cooldown:
        assert sum(throttled(together).values()) > 0


async def test_a_hung_redis_fails_the_whole_queue_open_with_one_timeout(redis_srv: RedisServer) -> None:
    rule = Rule(threshold=5, window=300, cooldown=60)
    async with failover(redis_srv, rule, "hung:", redis_timeout=0.2) as hung:
        assert redis_srv.process is not None
        redis_srv.process.send_signal(signal.SIGSTOP)
        try:
            with anyio.fail_after(10):  # a bound on the test, not a measure: it hangs if the queue does
                results = await concurrently(
                    [functools.partial(hung.tracker.record, [record("slow", str(i))]) for i in range(20)]
                )
        finally:
            redis_srv.process.send_signal(signal.SIGCONT)
        assert [verdicts(r) for r in results if r.triggers] == [[("slow", "4", 5, 0, True)]]
        assert sum(r.throttled["slow"] for r in results) == 15
        assert hung.errors("timeout") == 1, "one call timed out; the batches queued behind it did not wait again"
        assert hung.tracker.mode == "redis-fallback"
        assert not hung.tracker._leading
        assert hung.tracker._waiting == []


async def test_a_cancelled_leader_passes_the_lead_and_is_no_outage(redis_srv: RedisServer) -> None:
    rule = Rule(threshold=2, window=300, cooldown=60)
    async with failover(redis_srv, rule, "cancel:", redis_timeout=5.0) as tracked:
        tracker = tracked.tracker
        assert redis_srv.process is not None
        redis_srv.process.send_signal(signal.SIGSTOP)
        results: dict[str, Recorded] = {}
        leader_scope = anyio.CancelScope()

        async def leader() -> None:
            with leader_scope:
                await tracker.record([record("q", "leader")])

        async def waiter(name: str) -> None:
            results[name] = await tracker.record([record("q", name)])

        try:
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(leader)
                    tasks.start_soon(waiter, "b")
                    tasks.start_soon(waiter, "c")
                    # The leader's call is in flight, b and c queue.
                    await until(lambda: len(tracker._waiting) == 2)
                    leader_scope.cancel()
                    # b took the lead: its call, for b and c, is in flight.
                    await until(lambda: tracked.calls == [1, 2])
                    redis_srv.process.send_signal(signal.SIGCONT)
        finally:
            redis_srv.process.send_signal(signal.SIGCONT)
        assert leader_scope.cancelled_caught
        assert tracker.mode == "redis", "a cancelled call is not an outage"
        assert tracked.errors("timeout") == tracked.errors("connection") == 0
        # Decided in Redis: b or c is the second failure there (b, if Redis ran the cancelled call too).
        fired = [v for name in "bc" for v in verdicts(results[name])]
        assert len(fired) == 1, fired
        assert fired[0][4] is False
        assert not tracker._leading
        assert tracker._waiting == []
        after = await tracker.record([record("r", "1"), record("r", "2")])
        assert verdicts(after) == [("r", "2", 2, 0, False)]


async def test_a_waiter_cancelled_in_the_queue_leaves_it(redis_srv: RedisServer) -> None:
    rule = Rule(threshold=2, window=300, cooldown=60)
    async with failover(redis_srv, rule, "leave:", redis_timeout=5.0) as tracked:
        tracker = tracked.tracker
        assert redis_srv.process is not None
        results: dict[str, Recorded] = {}
        scopes = {name: anyio.CancelScope() for name in ("leader", "a", "b")}

        async def one(name: str) -> None:
            with scopes[name]:
                results[name] = await tracker.record([record("w", name)])

        redis_srv.process.send_signal(signal.SIGSTOP)
        try:
            with anyio.fail_after(10):  # without the queue's repair, b waits for a dead task's lead forever
                async with anyio.create_task_group() as tasks:
                    for name in scopes:
                        tasks.start_soon(one, name)
                    await until(lambda: len(tracker._waiting) == 2)
                    scopes["a"].cancel()
                    await until(lambda: len(tracker._waiting) == 1)
                    redis_srv.process.send_signal(signal.SIGCONT)
        finally:
            redis_srv.process.send_signal(signal.SIGCONT)
        assert scopes["a"].cancelled_caught
        assert set(results) == {"leader", "b"}
        assert tracked.calls == [1, 1], "a left the queue undecided: b's call held b alone"
        assert verdicts(results["leader"]) == []
        assert verdicts(results["b"]) == [("w", "b", 2, 0, False)]


async def test_a_waiter_cancelled_right_after_it_was_handed_the_lead_passes_it_on(redis_srv: RedisServer) -> None:
    rule = Rule(threshold=3, window=300, cooldown=60)
    async with failover(redis_srv, rule, "handed:") as tracked:
        tracker = tracked.tracker
        results: dict[str, Recorded] = {}
        tasks: dict[str, asyncio.Task[Any]] = {}

        async def leader() -> None:
            results["leader"] = await tracker.record([record("h", "leader")])
            tasks["a"].cancel()  # a has just been handed the lead and has not run yet

        # Plain asyncio tasks: asyncio's cancel reaches a task even when the event it waits on is already set.
        # Created in this order, they all start before the leader's reply: a and b queue behind its call.
        loop = asyncio.get_running_loop()
        tasks["leader"] = loop.create_task(leader())
        tasks["a"] = loop.create_task(tracker.record([record("h", "a")]))
        task_b = loop.create_task(tracker.record([record("h", "b")]))
        with anyio.fail_after(10):  # without the hand-on, b waits for the dead a's lead forever
            results["b"] = await task_b
            await tasks["leader"]
        with pytest.raises(asyncio.CancelledError):
            await tasks["a"]
        assert tracked.calls == [1, 1], "a left undecided, b led alone"
        assert tracker._waiting == []
        assert not tracker._leading
        assert verdicts(results["b"]) == [], "a's failure was never decided: b is the second"
        after = await tracker.record([record("h", "c")])
        assert verdicts(after) == [("h", "c", 3, 0, False)]
