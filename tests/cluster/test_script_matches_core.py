"""The Lua script against the pure core: the same traces must give the same decisions and figures."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from alertd.event import FailureEvent
from alertd.redis_scripts import signature
from alertd.redis_tracker import RedisTracker
from alertd.tracker import MemoryTracker
from alertd.window import ProviderWindow, Rule
from tests.support.daemon import FakeClock

BASE = 1_764_240_000.0  # an epoch time of the same size as Redis TIME gives
names = itertools.count()


@st.composite
def rules(draw: st.DrawFn) -> Rule:
    """A rule with or without tiers (up to three, at any levels, a level perhaps twice), with or without RESOLVE_AFTER.

    Few levels, so that two rules often share some and not others: rule changes carry cooldowns over by level.
    """
    threshold = draw(st.integers(1, 6))
    extra = draw(st.lists(st.integers(1, 4), max_size=2))
    tiers: tuple[tuple[int, str], ...] = ()
    if extra:
        thresholds = [threshold]
        for step in extra:
            thresholds.append(thresholds[-1] + step)
        levels = draw(
            st.lists(st.sampled_from(["warning", "error", "fatal"]), min_size=len(thresholds), max_size=len(thresholds))
        )
        tiers = tuple(zip(thresholds, levels, strict=True))
    return Rule(
        threshold=threshold,
        window=draw(st.sampled_from([1.0, 2.5, 10.0, 300.0, 7.3])),
        cooldown=draw(st.sampled_from([0.0, 0.5, 1.0, 10.0, 60.0])),
        resolve_after=draw(st.sampled_from([None, 0.5, 2.0, 7.0])),
        tiers=tiers,
    )


gaps = st.one_of(st.just(0.0), st.sampled_from([0.25, 0.5, 1.0, 2.5, 10.0]), st.floats(0, 20, allow_nan=False))
# (gap, failures (0: a resolve_due call instead), which of the two rules the provider is judged by)
steps = st.lists(st.tuples(gaps, st.integers(0, 6), st.integers(0, 1)), min_size=1, max_size=40)


def batch(provider: str, n: int) -> list[FailureEvent]:
    return [FailureEvent(provider=provider, request_id=str(i)) for i in range(n)]


def window_of(tracker: MemoryTracker, provider: str) -> ProviderWindow:
    return next(window for name, window, _ in tracker.export_entries() if name == provider)


@pytest.mark.anyio
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=rules(), second=rules(), trace=steps)
# A rule change while two tiers' cooldowns differ: each tier keeps its own (the warning tier's ends first).
@example(
    first=Rule(threshold=1, window=10.0, cooldown=10.0, tiers=((1, "warning"), (2, "error"))),
    second=Rule(threshold=1, window=10.0, cooldown=9.5, tiers=((1, "warning"), (2, "error"))),
    trace=[(0.0, 1, 0), (1.0, 1, 0), (8.8, 1, 1)],
)
# After a change that keeps the levels, the error tier fires through the warning tier's cooldown.
@example(
    first=Rule(threshold=2, window=10.0, cooldown=10.0, tiers=((2, "warning"), (4, "error"))),
    second=Rule(threshold=2, window=10.0, cooldown=9.0, tiers=((2, "warning"), (3, "error"))),
    trace=[(0.0, 2, 0), (1.0, 1, 1)],
)
# Levels moved, one twice: by level and rank within it, a new level (fatal) free; untiered is at "error".
@example(
    first=Rule(threshold=1, window=10.0, cooldown=10.0, tiers=((1, "warning"), (2, "error"), (3, "warning"))),
    second=Rule(threshold=1, window=10.0, cooldown=10.0, tiers=((1, "warning"), (2, "warning"), (4, "fatal"))),
    trace=[(0.0, 1, 0), (0.5, 1, 0), (0.5, 1, 0), (0.5, 1, 1), (0.5, 1, 1), (0.5, 1, 0)],
)
@example(
    first=Rule(threshold=2, window=10.0, cooldown=10.0),
    second=Rule(threshold=1, window=10.0, cooldown=10.0, tiers=((1, "warning"), (2, "error"))),
    trace=[(0.0, 2, 0), (1.0, 1, 1), (1.0, 1, 1)],
)
# The oldest live bucket straddles the window's trailing edge: the first failure is the edge itself.
@example(
    first=Rule(threshold=1, window=1.0, cooldown=0.0), second=Rule(), trace=[(0.0, 1, 0), (0.01, 1, 0), (0.995, 1, 0)]
)
async def test_script_decides_exactly_as_the_pure_tracker(
    redis_client: Redis, first: Rule, second: Rule, trace: list[tuple[float, int, int]]
) -> None:
    """Verdicts, tiers, figures, episodes, lazy and explicit resolutions, and rule changes, step by step."""
    provider = f"p{next(names)}"
    clock = FakeClock(BASE)
    current = [first]

    def rule_for(_provider: str) -> Rule:
        return current[0]

    pure = MemoryTracker(first, max_providers=10, clock=clock, rule_for=rule_for)
    # Clocks at 0: the figures come back in Redis epoch seconds, comparable with the pure tracker's.
    local = MemoryTracker(first, max_providers=10, clock=clock)
    shared = RedisTracker(
        redis_client, first, local, prefix="prop:", clock=lambda: 0.0, wall_clock=lambda: 0.0, rule_for=rule_for
    )
    seen = False
    for gap, n, which in trace:
        clock.advance(gap)
        if n == 0:
            if not seen:
                continue
            # resolve_due: the window's own (MemoryTracker's heap may hold a deadline a rule change moved).
            episode = window_of(pure, provider).resolve_due(clock.now)
            resolved = (await shared.resolve([provider], now=clock.now))[provider]
            assert resolved.now == clock.now
            assert resolved.episode == episode
            assert resolved.deadline == window_of(pure, provider).resolve_deadline()
            continue
        seen = True
        current[0] = (first, second)[which]
        expected = pure.record_now(batch(provider, n))
        decision = (await shared.decide({provider: n}, now=clock.now))[provider]
        assert decision.now == clock.now
        assert decision.throttled == expected.throttled[provider]
        assert [alert[:5] for alert in decision.alerts] == [
            (int(t.event.request_id or 0), t.count, t.first_at, t.throttled_since_last, t.tier)
            for t in expected.triggers
        ]
        assert [alert[5:] for alert in decision.alerts] == [
            (t.episode_started_at, t.episode_alerts) for t in expected.triggers
        ]
        assert [(decision.resolved, decision.now)] == [(r.episode, r.at) for r in expected.resolutions] or (
            decision.resolved is None and not expected.resolutions
        )
        assert decision.deadline == window_of(pure, provider).resolve_deadline()
    if not seen:
        return
    stats = await shared.stats_many([provider])
    assert stats, "the provider's state is in Redis"
    ours = pure.stats_now(provider)
    assert ours is not None
    assert (stats[0].failures_total, stats[0].alerts_total, stats[0].throttled_total) == (
        ours.failures_total,
        ours.alerts_total,
        ours.throttled_total,
    )
    assert (stats[0].episode, stats[0].last_resolved, stats[0].last_alert) == (
        ours.episode,
        ours.last_resolved,
        ours.last_alert,
    )
    # The cooldowns per tier, as the query API's state reads them.
    fields = await hgetall(redis_client, shared.keys(provider)[2])
    theirs = shared._window(provider, [], [], fields)
    assert theirs.cooldowns == window_of(pure, provider).cooldowns
    # A reload the provider has seen no failure since: the query API carries the cooldowns over as the
    # script will (an older alertd's signature, without levels: by index for the same rule, else the latest).
    last = current[0]
    other = current[0] = second if last is first else first
    unsigned = fields | {"rl": fields["rl"].rsplit("|", 1)[0]}
    cooldowns = list(window_of(pure, provider).cooldowns)
    window_of(pure, provider).change_rule(other)
    assert shared._window(provider, [], [], fields).cooldowns == window_of(pure, provider).cooldowns
    latest = max((c for c in cooldowns if c is not None), default=None)
    carried = cooldowns if other == last else [latest] * len(other.levels)
    assert shared._window(provider, [], [], unsigned).cooldowns == carried


async def hgetall(client: Redis, key: str) -> dict[str, str]:
    fields = await client.hgetall(key)
    return {_str(k): _str(v) for k, v in fields.items()}


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@pytest.mark.anyio
async def test_script_uses_redis_time_and_counts_beyond_the_trimmed_list(redis_client: Redis) -> None:
    rule = Rule(threshold=3, window=300, cooldown=60)
    shared = RedisTracker(redis_client, rule, MemoryTracker(rule, max_providers=10))
    first = await shared.record(batch("openai", 2))
    assert not first.triggers
    second = await shared.record(batch("openai", 5))
    assert [t.count for t in second.triggers] == [3]
    assert second.throttled == {"openai": 4}
    seconds, _ = await redis_client.time()
    last = await redis_client.lindex("{alertd:openai}:r", -1)
    assert last is not None
    stamp = float(last)
    assert abs(stamp - seconds) < 5, "stamps are Redis TIME"
    assert await redis_client.llen("{alertd:openai}:r") == 3
    stats = await shared.stats("openai")
    assert stats is not None
    assert stats.failures_in_window == 7, "the real count, not the trimmed list's length"
    assert (stats.failures_total, stats.alerts_total, stats.throttled_total) == (7, 1, 4)
    assert stats.state.value == "alerting"


@pytest.mark.anyio
async def test_memory_per_provider_is_bounded_whatever_the_failure_rate(redis_client: Redis) -> None:
    rule = Rule()  # the defaults: 5 failures in 300 s, cooldown 60 s
    shared = RedisTracker(redis_client, rule, MemoryTracker(rule, max_providers=10))
    for i in range(450):  # 450 calls of 100 failures spread over 337 s: every bucket of the window in use
        await shared.decide({"openai": 100}, now=BASE + i * 0.75)
    usage = 0
    for key in shared.keys("openai"):
        assert key.startswith("{alertd:openai}")
        ttl = await redis_client.pttl(key)
        assert 0 < ttl <= 601_000, "every key expires (2 x RESOLVE_AFTER + 1 s while an episode is open)"
        size = await redis_client.memory_usage(key)
        assert size is not None
        usage += size
    assert await redis_client.llen("{alertd:openai}:r") == 5
    assert await redis_client.llen("{alertd:openai}:b") <= 61
    assert usage <= 4096, usage  # measured: 3080 bytes on Redis 7.0 before episodes (docs/CLUSTER.md)


mixed_steps = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.5, 3.0, 61.0, 400.0]),
        st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=12),
    ),
    min_size=1,
    max_size=30,
)


@pytest.mark.anyio
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(trace=mixed_steps)
async def test_one_pipeline_for_many_providers_decides_each_as_the_pure_tracker(
    redis_client: Redis, trace: list[tuple[float, list[str]]]
) -> None:
    rule = Rule(threshold=3, window=10.0, cooldown=60.0)
    run = next(names)
    clock = FakeClock(BASE)
    pure = MemoryTracker(rule, max_providers=10, clock=clock)
    shared = RedisTracker(redis_client, rule, MemoryTracker(rule, max_providers=10, clock=clock), prefix=f"m{run}:")
    for gap, providers in trace:
        clock.advance(gap)
        batch = [FailureEvent(provider=p, request_id=str(i)) for i, p in enumerate(providers)]
        expected = pure.record_now(batch)
        counts: dict[str, int] = {}
        for p in providers:
            counts[p] = counts.get(p, 0) + 1
        decisions = await shared.decide(counts, now=clock.now)
        got = shared.apply(batch, decisions)
        assert got.throttled == expected.throttled
        assert [(t.provider, t.event.request_id, t.count, t.throttled_since_last) for t in got.triggers] == sorted(
            ((t.provider, t.event.request_id, t.count, t.throttled_since_last) for t in expected.triggers),
            key=lambda t: (list(counts).index(t[0]), int(t[1] or 0)),
        )


@pytest.mark.anyio
async def test_one_redis_decides_every_provider_of_a_call_in_one_evalsha(redis_client: Redis) -> None:
    rule = Rule(threshold=2, window=300, cooldown=60)
    shared = RedisTracker(redis_client, rule, MemoryTracker(rule, max_providers=10), prefix="one:")
    await shared.load()
    await redis_client.config_resetstat()
    decisions = await shared.decide({"a": 1, "b": 2, "c": 5})
    stats = await redis_client.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 1
    assert [(d.throttled, [alert[:2] for alert in d.alerts]) for d in decisions.values()] == [
        (0, []),
        (0, [(1, 2)]),
        (3, [(1, 2)]),
    ]
    assert {d.now for d in decisions.values()} == {decisions["a"].now}, "one call, one Redis TIME"


@pytest.mark.anyio
async def test_a_signature_without_levels_keeps_the_cooldowns_for_the_same_rule_else_spreads_the_latest(
    redis_client: Redis,
) -> None:
    """State an older alertd signed ("window|L|digest"): the script cannot map its cooldowns by level."""
    rule = Rule(threshold=1, window=100.0, cooldown=50.0, tiers=((1, "warning"), (2, "error")))
    shared = RedisTracker(redis_client, rule, MemoryTracker(rule, max_providers=10), prefix="older:")
    sig = signature(rule)
    for provider, older_sig, expected in (
        ("same", sig.rsplit("|", 1)[0], [BASE, BASE + 1]),  # the same rule: nothing changes
        ("other", "100.0|2|0123456789abcdef", [BASE + 1, BASE + 1]),  # another: the latest for every tier
    ):
        key = shared.keys(provider)[2]
        await shared.decide({provider: 1}, now=BASE)  # warning
        await shared.decide({provider: 1}, now=BASE + 1)  # error
        await redis_client.hset(key, "rl", older_sig)
        decision = (await shared.decide({provider: 1}, now=BASE + 2))[provider]
        assert (decision.throttled, decision.alerts) == (1, ())  # the error tier, in its cooldown
        fields = await hgetall(redis_client, key)
        assert [float(fields["c1"]), float(fields["c2"])] == expected, provider
        assert fields["rl"] == sig
