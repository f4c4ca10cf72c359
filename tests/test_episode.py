"""Firing episodes in the pure core: open, repeat, resolve, checked by hand and against a brute-force reference."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from alertd.event import FailureEvent
from alertd.tracker import MemoryTracker
from alertd.window import Episode, ProviderWindow, Rule, Verdict
from tests.support.daemon import FakeClock

RULE = Rule(threshold=3, window=10.0, cooldown=5.0, resolve_after=20.0)


def hits(window: ProviderWindow, *times: float) -> list[Verdict]:
    return [window.record(t) for t in times]


def test_an_episode_opens_repeats_and_resolves() -> None:
    window = ProviderWindow(RULE)
    assert hits(window, 0, 1, 2) == [Verdict.RECORDED, Verdict.RECORDED, Verdict.ALERT]
    assert window.episode == Episode(started_at=2, alerts=1, throttled=0, failures=3, last_hit=2)
    assert hits(window, 3) == [Verdict.THROTTLED]
    assert hits(window, 7) == [Verdict.ALERT]  # 5 s after the first alert: a repeat in the same episode
    assert window.episode == Episode(started_at=2, alerts=2, throttled=1, failures=5, last_hit=7)
    assert window.resolve_deadline() == 27
    assert window.resolve_due(26.999) is None
    resolved = window.resolve_due(27)
    assert resolved == Episode(started_at=2, alerts=2, throttled=1, failures=5, last_hit=7)
    assert window.episode is None
    assert window.last_resolved == 27
    assert window.resolve_due(100) is None  # exactly once


def test_a_resolution_is_due_exactly_at_the_deadline_and_not_a_moment_before() -> None:
    window = ProviderWindow(Rule(threshold=1, window=1.0, cooldown=0.0, resolve_after=0.25))
    assert hits(window, 10.0) == [Verdict.ALERT]
    assert window.resolve_due(10.249999) is None
    assert window.resolve_due(10.25) is not None


def test_a_throttled_hit_extends_the_episode() -> None:
    window = ProviderWindow(RULE)
    hits(window, 0, 1, 2)
    assert hits(window, 4) == [Verdict.THROTTLED]
    assert window.resolve_deadline() == 24
    assert window.resolve_due(22.5) is None


def test_a_failure_below_the_threshold_counts_in_the_episode_but_does_not_extend_it() -> None:
    window = ProviderWindow(RULE)
    hits(window, 0, 1, 2)
    assert hits(window, 15) == [Verdict.RECORDED]  # alone in its window
    assert window.resolve_deadline() == 22
    episode = window.resolve_due(22)
    assert episode is not None
    assert episode.failures == 4


def test_a_resolution_ends_the_cooldown_and_the_next_hit_opens_a_new_episode() -> None:
    window = ProviderWindow(Rule(threshold=2, window=10.0, cooldown=60.0, resolve_after=3.0))
    assert hits(window, 0, 1) == [Verdict.RECORDED, Verdict.ALERT]
    assert window.resolve_due(4) is not None
    assert not window.in_cooldown(4)
    assert hits(window, 5) == [Verdict.ALERT]  # within the old 60 s cooldown, but the episode ended
    assert window.episode == Episode(started_at=5, alerts=1, throttled=0, failures=3, last_hit=5)


def test_an_open_episode_keeps_the_provider_from_cleanup() -> None:
    clock = FakeClock(0.0)
    tracker = MemoryTracker(Rule(threshold=1, window=1.0, cooldown=0.0, resolve_after=50.0), 10, clock)
    tracker.record_now([FailureEvent("p")])
    clock.advance(30)
    assert tracker.cleanup_now() == []
    clock.advance(20)
    resolutions, _ = tracker.resolve_due_now()
    assert [r.provider for r in resolutions] == ["p"]
    assert tracker.cleanup_now() == ["p"]


def test_the_tracker_resolves_a_late_episode_before_weighing_the_next_failure() -> None:
    clock = FakeClock(0.0)
    tracker = MemoryTracker(Rule(threshold=1, window=1.0, cooldown=60.0, resolve_after=2.0), 10, clock)
    first = tracker.record_now([FailureEvent("p")])
    assert len(first.triggers) == 1
    assert first.triggers[0].episode_alerts == 1
    clock.advance(10)  # nobody called resolve_due
    second = tracker.record_now([FailureEvent("p")])
    assert [(r.provider, r.at) for r in second.resolutions] == [("p", 10.0)]
    [trigger] = second.triggers  # the cooldown ended with the episode
    assert (trigger.episode_started_at, trigger.episode_alerts) == (10.0, 1)
    resolutions, next_deadline = tracker.resolve_due_now()
    assert resolutions == []
    assert next_deadline == 12.0


def test_the_next_deadline_follows_the_latest_threshold_hit() -> None:
    clock = FakeClock(0.0)
    tracker = MemoryTracker(Rule(threshold=1, window=1.0, cooldown=60.0, resolve_after=5.0), 10, clock)
    tracker.record_now([FailureEvent("a")])
    clock.advance(1)
    tracker.record_now([FailureEvent("b")])
    clock.advance(3)
    tracker.record_now([FailureEvent("a")])  # throttled hit: a's deadline moves to 9
    assert tracker.resolve_due_now() == ([], 5.0)
    clock.advance(1)
    resolutions, next_deadline = tracker.resolve_due_now()
    assert resolutions == []  # a's stale deadline came up and was moved
    assert next_deadline == 6.0
    clock.advance(1)
    resolutions, next_deadline = tracker.resolve_due_now()
    assert [r.provider for r in resolutions] == ["b"]
    assert next_deadline == 9.0


# The brute-force reference: every failure kept, every rule applied from its definition.


@dataclass
class Reference:
    rule: Rule
    failures: list[float] = field(default_factory=list)
    cooldown_from: float | None = None
    episode: list[float] | None = None  # [start, alerts, throttled, failures, last hit]
    resolved: list[tuple[float, tuple[float, ...]]] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)

    def look(self, now: float) -> None:
        episode = self.episode
        if episode is not None and now >= episode[4] + self.rule.resolve_seconds:
            self.resolved.append((episode[4] + self.rule.resolve_seconds, tuple(episode)))
            self.episode = None
            self.cooldown_from = None

    def fail(self, now: float) -> None:
        self.look(now)
        self.failures.append(now)
        if self.episode is not None:
            self.episode[3] += 1
        in_window = sum(1 for t in self.failures if now - t <= self.rule.window)
        if in_window < self.rule.threshold:
            self.verdicts.append(Verdict.RECORDED)
            return
        if self.cooldown_from is not None and now - self.cooldown_from < self.rule.cooldown:
            self.verdicts.append(Verdict.THROTTLED)
            if self.episode is not None:
                self.episode[2] += 1
                self.episode[4] = now
            return
        self.verdicts.append(Verdict.ALERT)
        self.cooldown_from = now
        if self.episode is None:
            self.episode = [now, 1, 0, in_window, now]
        else:
            self.episode[1] += 1
            self.episode[4] = now


STEPS = st.lists(
    st.tuples(st.sampled_from(["fail", "look"]), st.integers(min_value=0, max_value=40).map(lambda q: q / 4)),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(
    steps=STEPS,
    threshold=st.integers(min_value=1, max_value=4),
    window=st.sampled_from([1.0, 2.5, 6.0]),
    cooldown=st.sampled_from([0.0, 1.0, 3.0, 8.0]),
    resolve_after=st.sampled_from([0.5, 2.0, 5.0]),
)
def test_episodes_agree_with_the_brute_force_reference(
    steps: list[tuple[str, float]], threshold: int, window: float, cooldown: float, resolve_after: float
) -> None:
    rule = Rule(threshold, window, cooldown, resolve_after)
    reference = Reference(rule)
    clock = FakeClock(0.0)
    tracker = MemoryTracker(rule, 10, clock)
    resolved: list[tuple[float, tuple[float, ...]]] = []
    verdicts: list[Verdict] = []
    for kind, gap in steps:
        clock.advance(gap)
        if kind == "fail":
            reference.fail(clock())
            recorded = tracker.record_now([FailureEvent("p")])
            verdicts.append(
                Verdict.ALERT if recorded.triggers else Verdict.THROTTLED if recorded.throttled else Verdict.RECORDED
            )
            resolutions = recorded.resolutions
        else:
            reference.look(clock())
            resolutions, _ = tracker.resolve_due_now()
        for resolution in resolutions:
            episode = resolution.episode
            deadline = episode.last_hit + resolve_after
            assert resolution.at >= deadline  # never before the deadline
            figures = (episode.started_at, episode.alerts, episode.throttled, episode.failures, episode.last_hit)
            resolved.append((deadline, figures))
    assert verdicts == reference.verdicts
    assert resolved == reference.resolved


def test_a_reload_that_shortens_resolve_after_moves_an_open_deadline_at_once() -> None:
    clock = FakeClock(0.0)
    tracker = MemoryTracker(Rule(threshold=1, window=10.0, resolve_after=300.0), 10, clock)
    tracker.record_now([FailureEvent("p")])
    assert tracker.resolve_due_now() == ([], 300.0)
    shorter = Rule(threshold=1, window=10.0, resolve_after=5.0)
    tracker.set_rules(lambda provider: shorter)
    clock.advance(1)
    assert tracker.resolve_due_now() == ([], 5.0)
    clock.advance(4)
    resolutions, _ = tracker.resolve_due_now()
    assert [(r.provider, r.at) for r in resolutions] == [("p", 5.0)]


def test_eviction_spares_firing_providers_and_reports_an_episode_it_must_drop() -> None:
    clock = FakeClock(0.0)
    rule = Rule(threshold=2, window=10.0, cooldown=0.0, resolve_after=100.0)
    tracker = MemoryTracker(rule, 2, clock)
    tracker.record_now([FailureEvent("firing")] * 2)
    tracker.record_now([FailureEvent("busy")])  # not firing, not idle
    recorded = tracker.record_now([FailureEvent("new")])
    assert recorded.evicted == ["busy"]
    assert recorded.dropped == []
    recorded = tracker.record_now([FailureEvent("new")])  # "new" fires: both tracked providers are firing
    recorded = tracker.record_now([FailureEvent("newer")])
    assert recorded.evicted == ["firing"]
    assert [(lost.provider, lost.episode.alerts) for lost in recorded.dropped] == [("firing", 1)]
