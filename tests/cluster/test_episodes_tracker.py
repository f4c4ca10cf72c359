"""Episodes in Redis through the trackers, against a real redis-server: one resolution per episode over all
processes, deadlines learnt from replies, filters applied before Redis, rules set for Redis and fallback."""

from __future__ import annotations

import io
import signal

import anyio
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from alertd.event import FailureEvent
from alertd.logs import make_logger
from alertd.metrics import BackendMetrics
from alertd.redis_tracker import EPISODE_POLL, FailoverTracker, RedisTracker, Resolved
from alertd.tracker import MemoryTracker
from alertd.window import Resolution, Rule
from tests.cluster.test_group_commit import failover
from tests.cluster.test_script_matches_core import BASE, batch
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio


def tracker(client: Redis, rule: Rule, prefix: str = "ep:") -> RedisTracker:
    return RedisTracker(client, rule, MemoryTracker(rule, max_providers=10), prefix=prefix)


async def test_concurrent_resolve_calls_give_the_episode_to_exactly_one(redis_client: Redis) -> None:
    rule = Rule(threshold=2, window=60, cooldown=60, resolve_after=5)
    trackers = [tracker(redis_client, rule) for _ in range(3)]
    decision = (await trackers[0].decide({"openai": 3}, now=BASE))["openai"]
    assert (decision.deadline, len(decision.alerts), decision.throttled) == (BASE + 5, 1, 1)
    early = await trackers[1].resolve(["openai"], now=BASE + 4.9)
    assert (early["openai"].episode, early["openai"].deadline) == (None, BASE + 5)
    found: list[Resolved] = []
    async with anyio.create_task_group() as tasks:  # three processes at the deadline, all at once
        for each in trackers:

            async def resolve(each: RedisTracker = each) -> None:
                found.append((await each.resolve(["openai"], now=BASE + 5))["openai"])

            tasks.start_soon(resolve)
    resolved = [r.episode for r in found if r.episode is not None]
    assert len(resolved) == 1, found
    assert (resolved[0].started_at, resolved[0].alerts, resolved[0].throttled, resolved[0].failures) == (BASE, 1, 1, 3)
    assert all(r.deadline is None for r in found)
    # The resolution ended the cooldown: the next threshold hit alerts at once and opens the next episode.
    again = (await trackers[2].decide({"openai": 1}, now=BASE + 6))["openai"]
    assert [(a[0], a[5], a[6]) for a in again.alerts] == [(0, BASE + 6, 1)]


async def test_resolve_due_follows_deadlines_other_processes_move_and_resolves_once(redis_client: Redis) -> None:
    rule = Rule(threshold=5, window=60, cooldown=60, resolve_after=0.3)
    opener, other = tracker(redis_client, rule), tracker(redis_client, rule)
    opened = await opener.record(batch("openai", 5))
    assert [(t.episode_alerts, t.tier) for t in opened.triggers] == [(1, 0)]
    assert opened.triggers[0].episode_started_at is not None
    hit = await other.record(batch("openai", 1))  # a throttled threshold hit: it extends the episode
    assert hit.throttled == {"openai": 1}
    assert set(opener.deadlines) == set(other.deadlines) == {"openai"}
    assert other.deadlines["openai"] >= opener.deadlines["openai"]
    resolutions, next_look = await opener.resolve_due()
    assert resolutions == []
    assert next_look is not None
    assert next_look <= opener.clock() + EPISODE_POLL
    while other.clock() < other.deadlines["openai"]:  # noqa: ASYNC110 - waiting for Redis's deadline
        await anyio.sleep(0.05)
    await anyio.sleep(0.05)  # the local clock reached it; Redis TIME too, give or take the conversion
    results: list[Resolution] = []
    async with anyio.create_task_group() as tasks:
        for each in (opener, other):

            async def look(each: RedisTracker = each) -> None:
                while each.deadlines:
                    results.extend((await each.resolve_due())[0])
                    await anyio.sleep(0.02)

            tasks.start_soon(look)
    assert len(results) == 1, results
    episode = results[0].episode
    assert (results[0].provider, episode.alerts, episode.throttled, episode.failures) == ("openai", 1, 1, 6)
    assert opener.deadlines == other.deadlines == {}
    assert await opener.resolve_due() == ([], None)
    stats = await other.stats("openai")
    assert stats is not None
    assert (stats.episode, stats.last_resolved is not None) == (None, True)


async def test_filters_apply_before_redis_and_are_tallied(redis_client: Redis) -> None:
    rule = Rule(threshold=2, window=60, cooldown=60, count_status=frozenset({503}), ignore_error_types=frozenset({"x"}))
    shared = tracker(redis_client, rule, prefix="filters:")
    events = [
        FailureEvent(provider="openai", request_id="a", status=404),
        FailureEvent(provider="openai", request_id="b", status=503, error_type="x"),
        FailureEvent(provider="openai", request_id="c", status=503),
        FailureEvent(provider="openai", request_id="d", status=400),
        FailureEvent(provider="openai", request_id="e"),
    ]
    recorded = await shared.record(events)
    assert recorded.ignored == {("openai", "status"): 2, ("openai", "error_type"): 1}
    assert [t.event.request_id for t in recorded.triggers] == ["e"], "the second counted failure alerts"
    assert recorded.failures == {"openai": 5}
    stats = await shared.stats("openai")
    assert stats is not None
    assert (stats.failures_total, stats.failures_in_window) == (2, 2), "Redis saw the counted ones only"


async def test_set_rules_reaches_redis_and_the_fallback(redis_client: Redis) -> None:
    default = Rule(threshold=5, window=60, cooldown=60)
    tiered = Rule(threshold=2, window=60, cooldown=60, tiers=((2, "warning"), (4, "error")))
    shared = tracker(redis_client, default, prefix="rules:")
    failover = FailoverTracker(
        shared,
        BackendMetrics(CollectorRegistry()),
        make_logger("info", "json", stream=io.StringIO()),
        timeout=1.0,
        details={},
    )
    failover.up = True  # as after the first probe (the script loads on NOSCRIPT)
    failover.set_rules(lambda provider: tiered if provider == "openai" else default)
    assert shared.rule_for("openai") is tiered
    assert failover.local.rule_for("openai") is tiered
    recorded = await failover.record(batch("openai", 4) + batch("bedrock", 4))
    assert [(t.provider, t.tier, t.episode_alerts, t.rule) for t in recorded.triggers] == [
        ("openai", 0, 1, tiered),
        ("openai", 1, 2, tiered),
    ]
    failover.up = False  # Redis "down": the local tracker decides, by the same rules
    local = await failover.record(batch("azure", 1) + batch("openai", 4))
    # The local window holds the 4 failures it recorded meanwhile: the highest tier is reached at once.
    assert [(t.provider, t.tier, t.fallback) for t in local.triggers] == [("openai", 1, True)]
    resolutions, next_look = await failover.resolve_due()
    assert resolutions == []
    assert next_look is not None, "a next look is always given: another process may open an episode"


async def test_an_outage_resolves_the_fallback_episode_here_and_the_redis_one_after_recovery(
    redis_srv: RedisServer,
) -> None:
    """docs/CLUSTER.md, "Episodes across an outage": the fallback's own resolution while Redis hangs, the
    Redis episode's after it answers again."""
    rule = Rule(threshold=2, window=60, cooldown=60, resolve_after=0.3)
    async with failover(redis_srv, rule, "outage:", redis_timeout=0.2) as tracked:
        tracker = tracked.tracker
        opened = await tracker.record(batch("openai", 2))
        assert [(t.fallback, t.episode_alerts) for t in opened.triggers] == [(False, 1)]
        assert set(tracker.shared.deadlines) == {"openai"}
        assert redis_srv.process is not None
        redis_srv.process.send_signal(signal.SIGSTOP)  # Redis hung: unreachable, its data kept
        try:
            local = await tracker.record(batch("openai", 2))  # times out, then decided here
            assert tracker.mode == "redis-fallback"
            assert [(t.fallback, t.episode_alerts) for t in local.triggers] == [(True, 1)], "its own episode"
            found: list[Resolution] = []
            with anyio.fail_after(10):  # a bound on the test, not a measure
                while not found:
                    found.extend((await tracker.resolve_due())[0])
                    await anyio.sleep(0.05)
            assert [(r.provider, r.episode.alerts, r.episode.failures) for r in found] == [("openai", 1, 4)]
            assert set(tracker.shared.deadlines) == {"openai"}, "the Redis episode waits for Redis"
        finally:
            redis_srv.process.send_signal(signal.SIGCONT)
        late: list[Resolution] = []
        with anyio.fail_after(15):
            while not late:
                late.extend((await tracker.resolve_due())[0])
                await anyio.sleep(0.05)
        assert tracker.mode == "redis"
        # The call that timed out was still in the hung Redis's socket and ran on SIGCONT, past the first
        # episode's deadline: it resolved that one lazily (a resolution nobody got: its reply went nowhere),
        # then its two failures opened a second episode in Redis (an alert nobody sent; this process had
        # decided them in fallback), which resolves after recovery: docs/CLUSTER.md's lost-resolution case.
        assert [(r.provider, r.episode.alerts, r.episode.throttled, r.episode.failures) for r in late] == [
            ("openai", 1, 1, 4)
        ]
        assert tracker.shared.deadlines == {}
