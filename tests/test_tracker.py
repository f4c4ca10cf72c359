"""The in-memory tracker: batches, the provider cap, eviction and cleanup, with a fake clock."""

from __future__ import annotations

from alertd.event import FailureEvent
from alertd.tracker import MemoryTracker
from alertd.window import Rule, State
from tests.support.daemon import FakeClock


def events(provider: str, n: int, **fields: object) -> list[FailureEvent]:
    return [FailureEvent(provider=provider, request_id=f"{provider}-{i}", **fields) for i in range(n)]  # type: ignore[arg-type]


def test_batch_counts_each_failure_on_its_own_and_alerts_once_per_cooldown() -> None:
    clock = FakeClock()
    tracker = MemoryTracker(Rule(threshold=5, window=300, cooldown=60), max_providers=10, clock=clock)
    result = tracker.record_now(events("openai", 12) + events("bedrock", 2))
    assert result.failures == {"openai": 12, "bedrock": 2}
    assert [t.provider for t in result.triggers] == ["openai"]
    trigger = result.triggers[0]
    assert trigger.event.request_id == "openai-4"  # the fifth failure crossed the threshold
    assert trigger.count == 5
    assert result.throttled == {"openai": 7}
    assert sorted(result.admitted) == ["bedrock", "openai"]
    clock.advance(60)
    again = tracker.record_now(events("openai", 1))
    assert len(again.triggers) == 1
    assert again.triggers[0].throttled_since_last == 7
    assert again.triggers[0].count == 13


def test_trigger_carries_up_to_five_recent_failures() -> None:
    tracker = MemoryTracker(Rule(threshold=7, window=300, cooldown=60), max_providers=10, clock=FakeClock())
    trigger = tracker.record_now(events("p", 7)).triggers[0]
    assert [e.request_id for _, e in trigger.recent] == ["p-2", "p-3", "p-4", "p-5", "p-6"]


def test_cap_evicts_least_recently_seen_idle_provider_first() -> None:
    clock = FakeClock()
    tracker = MemoryTracker(Rule(threshold=2, window=10, cooldown=60), max_providers=3, clock=clock)
    tracker.record_now(events("a", 1))
    clock.advance(1)
    tracker.record_now(events("b", 2))  # alerts: in cooldown for 60 s
    clock.advance(1)
    tracker.record_now(events("c", 1))
    clock.advance(20)  # a and c idle (window empty), b in cooldown
    tracker.record_now(events("a", 1))  # a is now the most recently seen
    result = tracker.record_now(events("d", 1))
    assert result.evicted == ["c"]
    assert tracker.stats_now("c") is None
    assert tracker.tracked() == 3


def test_cap_evicts_least_recently_seen_when_every_provider_is_active() -> None:
    clock = FakeClock()
    tracker = MemoryTracker(Rule(threshold=5, window=300, cooldown=60), max_providers=2, clock=clock)
    tracker.record_now(events("a", 1))
    clock.advance(1)
    tracker.record_now(events("b", 1))
    result = tracker.record_now(events("c", 1))
    assert result.evicted == ["a"]
    assert [s.provider for s in tracker.all_stats_now()] == ["b", "c"]


def test_cleanup_forgets_only_idle_providers() -> None:
    clock = FakeClock()
    rule = Rule(threshold=2, window=10, cooldown=30, resolve_after=25)
    tracker = MemoryTracker(rule, max_providers=10, clock=clock)
    tracker.record_now(events("quiet", 1))
    tracker.record_now(events("alerted", 2))
    clock.advance(10)
    assert tracker.cleanup_now() == []  # exactly WINDOW old: still in the window
    clock.advance(0.5)
    assert tracker.cleanup_now() == ["quiet"]
    stats = tracker.stats_now("alerted")
    assert stats is not None
    assert stats.state is State.COOLDOWN
    clock.advance(20)
    assert tracker.cleanup_now() == []  # idle, but its episode is open until it is resolved
    resolutions, next_deadline = tracker.resolve_due_now()
    assert [r.provider for r in resolutions] == ["alerted"]
    assert next_deadline is None
    assert tracker.cleanup_now() == ["alerted"]
    assert tracker.tracked() == 0


def test_stats_report_the_query_fields() -> None:
    clock = FakeClock(500.0)
    tracker = MemoryTracker(Rule(threshold=3, window=60, cooldown=30), max_providers=10, clock=clock)
    tracker.record_now(events("p", 4))
    clock.advance(5)
    stats = tracker.stats_now("p")
    assert stats is not None
    assert (stats.failures_in_window, stats.failures_total, stats.alerts_total, stats.throttled_total) == (4, 4, 1, 1)
    assert stats.last_failure == 500.0
    assert stats.last_alert == 500.0
    assert stats.state is State.ALERTING
