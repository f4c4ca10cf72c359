"""The detection rule: property tests against a brute-force reference, and the exact boundaries."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from alertd.window import BUCKETS, ProviderWindow, Rule, State, Verdict


def reference_verdicts(times: list[float], rule: Rule) -> list[Verdict]:
    """The rule read literally, over the whole history: no deque, no buckets."""
    verdicts = []
    last_alert: float | None = None
    for i, now in enumerate(times):
        in_window = sum(1 for t in times[: i + 1] if now - t <= rule.window)
        if in_window < rule.threshold:
            verdicts.append(Verdict.RECORDED)
        elif last_alert is not None and now - last_alert < rule.cooldown:
            verdicts.append(Verdict.THROTTLED)
        else:
            last_alert = now
            verdicts.append(Verdict.ALERT)
    return verdicts


rules = st.builds(
    Rule,
    threshold=st.integers(1, 8),
    window=st.sampled_from([1.0, 2.5, 10.0, 300.0]),
    cooldown=st.sampled_from([0.0, 0.5, 1.0, 10.0, 60.0]),
)
gaps = st.lists(
    st.one_of(st.just(0.0), st.sampled_from([0.25, 0.5, 1.0, 2.5, 10.0]), st.floats(0, 20, allow_nan=False)),
    max_size=60,
)


def arrivals(start: float, deltas: list[float]) -> list[float]:
    times, now = [], start
    for delta in deltas:
        now += delta
        times.append(now)
    return times


@settings(max_examples=400, deadline=None)
@given(rule=rules, deltas=gaps, start=st.sampled_from([0.0, 1000.0, 123456.75]))
def test_verdicts_match_brute_force_reference(rule: Rule, deltas: list[float], start: float) -> None:
    times = arrivals(start, deltas)
    window = ProviderWindow(rule)
    assert [window.record(t) for t in times] == reference_verdicts(times, rule)


@settings(max_examples=300, deadline=None)
@given(rule=rules, deltas=gaps, later=st.floats(0, 400, allow_nan=False))
def test_window_count_is_exact_below_threshold_and_within_one_bucket_above(
    rule: Rule, deltas: list[float], later: float
) -> None:
    times = arrivals(1000.0, deltas)
    window = ProviderWindow(rule)
    for t in times:
        window.record(t)
    now = (times[-1] if times else 1000.0) + later
    exact = sum(1 for t in times if now - t <= rule.window)
    reported = window.count_in_window(now)
    if exact < rule.threshold:
        assert reported == exact
    else:
        width = rule.window / BUCKETS
        upper = sum(1 for t in times if now - t <= rule.window + width)
        assert exact <= reported <= upper
    first = window.first_in_window(now)
    in_window = [t for t in times if now - t <= rule.window]
    if in_window:
        assert first is not None
        assert in_window[0] - rule.window / BUCKETS <= first <= in_window[0]
    assert window.failures_total == len(times)


def test_alert_fires_when_threshold_th_failure_is_exactly_window_old() -> None:
    window = ProviderWindow(Rule(threshold=3, window=10.0, cooldown=60.0))
    assert window.record(100.0) is Verdict.RECORDED
    assert window.record(105.0) is Verdict.RECORDED
    # The oldest of the last three is exactly WINDOW old: still inside.
    assert window.record(110.0) is Verdict.ALERT


def test_no_alert_when_threshold_th_failure_is_just_older_than_window() -> None:
    window = ProviderWindow(Rule(threshold=3, window=10.0, cooldown=60.0))
    window.record(100.0)
    window.record(105.0)
    assert window.record(110.001) is Verdict.RECORDED


def test_burst_straddling_a_window_edge_alerts() -> None:
    # A window that resets at its first failure would miss this: 2 failures late in one
    # "fixed" window and 3 early in the next.
    window = ProviderWindow(Rule(threshold=5, window=300.0, cooldown=60.0))
    verdicts = [window.record(t) for t in (290.0, 295.0, 301.0, 302.0, 303.0)]
    assert verdicts[-1] is Verdict.ALERT


def test_cooldown_throttles_until_exactly_cooldown_has_passed() -> None:
    window = ProviderWindow(Rule(threshold=2, window=100.0, cooldown=60.0))
    window.record(0.0)
    assert window.record(1.0) is Verdict.ALERT
    assert window.record(30.0) is Verdict.THROTTLED
    assert window.record(60.999) is Verdict.THROTTLED
    assert window.mark_alert_sent() == 2
    # Exactly COOLDOWN after the last alert, a hit alerts again.
    assert window.record(61.0) is Verdict.ALERT
    assert (window.alerts_total, window.throttled_total) == (2, 2)


def test_threshold_one_alerts_on_every_failure_outside_cooldown() -> None:
    window = ProviderWindow(Rule(threshold=1, window=1.0, cooldown=0.0))
    assert [window.record(t) for t in (0.0, 0.0, 5.0)] == [Verdict.ALERT] * 3


def test_memory_is_bounded_whatever_the_failure_rate() -> None:
    rule = Rule(threshold=5, window=300.0, cooldown=60.0)
    window = ProviderWindow(rule)
    # 50,000 failures a second for ten minutes, sampled: every 2 ms over 600 s.
    for i in range(300_000):
        window.record(i * 0.002)
    assert len(window.recent) == rule.threshold
    assert len(window._buckets) <= BUCKETS + 1
    assert window.failures_total == 300_000
    now = 599.998
    assert abs(window.count_in_window(now) - 150_000) <= math.ceil(150_000 / BUCKETS) + 1


def test_states() -> None:
    window = ProviderWindow(Rule(threshold=2, window=10.0, cooldown=60.0, resolve_after=100.0))
    assert window.state(0.0) is State.OK
    window.record(0.0)
    assert window.state(0.0) is State.OK
    window.record(1.0)
    assert window.state(5.0) is State.ALERTING
    assert window.state(20.0) is State.COOLDOWN
    assert not window.is_idle(20.0)
    assert window.state(61.0) is State.OK
    assert not window.is_idle(61.0)  # its episode is open until 101
    assert window.resolve_due(100.9) is None
    assert window.resolve_due(101.0) is not None
    assert window.is_idle(101.0)
