"""Escalation tiers, status and error-type filters, and rule changes in the pure core."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from alertd.alert import build_alert
from alertd.event import FailureEvent
from alertd.tracker import MemoryTracker
from alertd.window import ProviderWindow, Rule, Verdict, carry_cooldowns
from tests.support.daemon import FakeClock

TIERED = Rule(threshold=3, window=100.0, cooldown=60.0, tiers=((3, "warning"), (6, "error"), (9, "fatal")))


def test_the_highest_tier_reached_fires_even_while_a_lower_tier_is_in_its_cooldown() -> None:
    window = ProviderWindow(TIERED)
    verdicts = [(window.record(float(t)), window.alert_tier) for t in range(10)]
    assert [v for v, _ in verdicts] == [
        Verdict.RECORDED,
        Verdict.RECORDED,
        Verdict.ALERT,  # failure 3: warning
        Verdict.THROTTLED,
        Verdict.THROTTLED,
        Verdict.ALERT,  # failure 6: error, through the warning tier's cooldown
        Verdict.THROTTLED,
        Verdict.THROTTLED,
        Verdict.ALERT,  # failure 9: fatal
        Verdict.THROTTLED,
    ]
    assert [tier for v, tier in verdicts if v is Verdict.ALERT] == [0, 1, 2]
    assert len(window.recent) == 9  # at most the highest tier's threshold of timestamps


def test_each_tier_has_its_own_cooldown() -> None:
    rule = Rule(threshold=2, window=10.0, cooldown=15.0, resolve_after=100.0, tiers=((2, "warning"), (4, "error")))
    window = ProviderWindow(rule)
    assert [window.record(t) for t in (0, 1, 2, 3)][1::2] == [Verdict.ALERT, Verdict.ALERT]  # warning, error
    assert window.record(12) is Verdict.THROTTLED  # warning tier again, 11 s after the warning
    assert window.record(17) is Verdict.ALERT  # 16 s after the warning: its own cooldown is over
    assert window.alert_tier == 0  # while the error tier's cooldown (from 3 s) still runs
    assert window.in_cooldown(17.5)


def test_a_tiered_alert_carries_the_tier_as_level_tag_and_message() -> None:
    clock = FakeClock(0.0)
    tracker = MemoryTracker(TIERED, 10, clock)
    triggers = tracker.record_now([FailureEvent("p")] * 6).triggers
    alerts = [build_alert(t, 0.0) for t in triggers]
    assert [(a.level, a.threshold) for a in alerts] == [("warning", 3), ("error", 6)]
    assert alerts[1].to_sentry_event()["level"] == "error"
    assert alerts[1].tags()["severity"] == "error"
    assert alerts[1].message.startswith("[error] Upstream provider p failed 6 times in the last 100s (threshold 6)")
    assert alerts[1].to_sentry_event()["fingerprint"] == alerts[0].to_sentry_event()["fingerprint"]


def test_an_untiered_alert_has_level_error_and_no_severity_tag() -> None:
    tracker = MemoryTracker(Rule(threshold=1), 10, FakeClock())
    [alert] = [build_alert(t, 0.0) for t in tracker.record_now([FailureEvent("p")]).triggers]
    assert alert.level == "error"
    assert "severity" not in alert.tags()
    assert not alert.message.startswith("[")


def test_statuses_and_error_types_a_rule_does_not_count() -> None:
    rule = Rule(
        threshold=2,
        count_status=frozenset({408}),
        count_classes=frozenset({5}),
        ignore_error_types=frozenset({"client_cancelled"}),
    )
    assert rule.ignores(429, None) == "status"
    assert rule.ignores(404, "timeout") == "status"
    assert rule.ignores(408, None) is None
    assert rule.ignores(503, None) is None
    assert rule.ignores(None, None) is None  # no status: always counts
    assert rule.ignores(503, "client_cancelled") == "error_type"  # whatever the status
    assert rule.ignores(None, "client_cancelled") == "error_type"
    assert Rule(threshold=2).ignores(429, "client_cancelled") is None


def test_ignored_failures_are_tallied_and_never_reach_the_window() -> None:
    rule = Rule(threshold=2, count_classes=frozenset({5}), ignore_error_types=frozenset({"client_cancelled"}))
    tracker = MemoryTracker(rule, 10, FakeClock())
    recorded = tracker.record_now(
        [
            FailureEvent("p", status=429),
            FailureEvent("p", status=502, error_type="client_cancelled"),
            FailureEvent("p", status=503),
        ]
    )
    assert recorded.failures["p"] == 3
    assert recorded.ignored == {("p", "status"): 1, ("p", "error_type"): 1}
    assert recorded.triggers == []
    assert len(tracker.record_now([FailureEvent("p")]).triggers) == 1


def test_a_new_rule_judges_the_next_failure_and_keeps_the_window() -> None:
    clock = FakeClock(0.0)
    tracker = MemoryTracker(Rule(threshold=5, window=60.0), 10, clock)
    tracker.record_now([FailureEvent("p")] * 3)
    tracker.set_rules(lambda provider: Rule(threshold=4, window=60.0))
    clock.advance(1)
    [trigger] = tracker.record_now([FailureEvent("p")]).triggers
    assert trigger.rule.threshold == 4
    assert trigger.count == 4


def test_a_reload_that_keeps_the_levels_keeps_each_tier_s_own_cooldown() -> None:
    window = ProviderWindow(TIERED)
    assert [window.record(float(t)) for t in range(3)][-1] is Verdict.ALERT  # warning at 2
    # Another rule with the same levels (other thresholds and cooldown): each tier keeps its own cooldown.
    reloaded = Rule(threshold=3, window=100.0, cooldown=50.0, tiers=((3, "warning"), (5, "error"), (9, "fatal")))
    window.change_rule(reloaded)
    assert window.cooldowns == [2.0, None, None]
    assert window.record(3.0) is Verdict.THROTTLED  # warning again, inside the warning tier's cooldown
    assert window.record(4.0) is Verdict.ALERT  # error, through the warning tier's cooldown, right after the reload
    assert window.alert_tier == 1
    assert window.cooldowns == [2.0, 4.0, None]
    # Through the tracker's reload too.
    clock = FakeClock(0.0)
    tracker = MemoryTracker(TIERED, 10, clock)
    assert [t.tier for t in tracker.record_now([FailureEvent("p")] * 3).triggers] == [0]
    tracker.set_rules(lambda _provider: reloaded)  # the provider is firing: it takes the rule at once
    clock.advance(1.0)
    assert [t.tier for t in tracker.record_now([FailureEvent("p")] * 3).triggers] == [1]


def test_a_plain_threshold_change_keeps_the_cooldown() -> None:
    window = ProviderWindow(Rule(threshold=5, window=60.0, cooldown=30.0))
    assert [window.record(float(t)) for t in range(5)][-1] is Verdict.ALERT
    window.change_rule(Rule(threshold=4, window=60.0, cooldown=30.0))  # both at the implicit level "error"
    assert window.cooldowns == [4.0]
    assert window.record(5.0) is Verdict.THROTTLED  # no second alert right after the reload
    assert window.record(34.0) is Verdict.ALERT  # the cooldown from 4 s ran out


def test_a_tier_at_a_new_level_starts_without_a_cooldown() -> None:
    window = ProviderWindow(Rule(threshold=3, window=60.0, cooldown=30.0))
    assert [window.record(float(t)) for t in range(3)][-1] is Verdict.ALERT  # level "error" at 2
    window.change_rule(Rule(threshold=3, window=60.0, cooldown=30.0, tiers=((3, "warning"), (6, "error"))))
    assert window.cooldowns == [None, 2.0]
    assert window.record(3.0) is Verdict.ALERT  # warning: a new level, free
    assert window.alert_tier == 0
    assert window.record(4.0) is Verdict.THROTTLED
    assert window.record(5.0) is Verdict.THROTTLED  # error: its cooldown from 2 s carried over
    window.change_rule(Rule(threshold=3, window=60.0, cooldown=30.0, tiers=((3, "info"), (6, "fatal"))))
    assert window.cooldowns == [None, None]
    assert window.record(6.0) is Verdict.ALERT  # fatal: new, free
    assert window.alert_tier == 1


def test_cooldowns_carry_over_by_level_and_by_rank_within_a_level() -> None:
    old = ["warning", "warning", "error"]
    assert carry_cooldowns(old, [1.0, 2.0, 3.0], ["warning", "error", "warning", "warning"]) == [1.0, 3.0, 2.0, None]
    assert carry_cooldowns(old, [1.0, None, 3.0], ["fatal", "error"]) == [None, 3.0]
    assert carry_cooldowns(["error"], [7.0], ["error"]) == [7.0]


def test_a_provider_matched_by_a_rule_keeps_its_own_window() -> None:
    strict, loose = Rule(threshold=1), Rule(threshold=3)
    tracker = MemoryTracker(loose, 10, FakeClock(), rule_for=lambda p: strict if p.startswith("s") else loose)
    recorded = tracker.record_now([FailureEvent("s1"), FailureEvent("s2"), FailureEvent("l1"), FailureEvent("l2")])
    assert sorted(t.provider for t in recorded.triggers) == ["s1", "s2"]


def reference(times: list[float], rule: Rule) -> list[tuple[Verdict, int]]:
    """Escalation from its definition: every failure kept, the highest tier met decides, cooldowns per tier."""
    seen: list[float] = []
    cooldowns: dict[int, float] = {}
    out: list[tuple[Verdict, int]] = []
    for now in times:
        seen.append(now)
        in_window = sum(1 for t in seen if now - t <= rule.window)
        reached = [i for i, (threshold, _) in enumerate(rule.levels) if in_window >= threshold]
        if not reached:
            out.append((Verdict.RECORDED, -1))
            continue
        tier = reached[-1]
        if tier in cooldowns and now - cooldowns[tier] < rule.cooldown:
            out.append((Verdict.THROTTLED, tier))
            continue
        cooldowns[tier] = now
        out.append((Verdict.ALERT, tier))
    return out


@settings(max_examples=300, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=0, max_value=12).map(lambda q: q / 4), max_size=80),
    thresholds=st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=4, unique=True).map(sorted),
    window=st.sampled_from([1.0, 2.5, 6.0]),
    cooldown=st.sampled_from([0.0, 1.0, 4.0]),
)
def test_escalation_agrees_with_the_brute_force_reference(
    gaps: list[float], thresholds: list[int], window: float, cooldown: float
) -> None:
    levels = ("info", "warning", "error", "fatal")
    tiers = tuple((t, levels[i]) for i, t in enumerate(thresholds))
    # Episodes never resolve here, so that only the tiers' cooldowns decide.
    rule = Rule(thresholds[0], window, cooldown, resolve_after=10_000.0, tiers=tiers)
    times: list[float] = []
    now = 0.0
    for gap in gaps:
        now += gap
        times.append(now)
    provider = ProviderWindow(rule)
    got = []
    for t in times:
        verdict = provider.record(t)
        got.append((verdict, provider.alert_tier if verdict is Verdict.ALERT else -2))
    expected = [(v, tier if v is Verdict.ALERT else -2) for v, tier in reference(times, rule)]
    assert got == expected
