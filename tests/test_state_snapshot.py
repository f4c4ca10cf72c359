"""alertd/snapshot.py, pure: round trips over two clocks, expiry on restore, and strict shape validation."""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alertd.errors import StateError
from alertd.event import FailureEvent
from alertd.silences import SilenceStore
from alertd.snapshot import VERSION, build_document, decode, encode, restore
from alertd.tracker import MemoryTracker, ProviderStats
from alertd.window import Rule
from tests.support.daemon import FakeClock

RULE = Rule(threshold=5, window=300.0, cooldown=60.0)
# The first process's clock reads 1000 at wall time 1.8e9; the second's reads 50 at a later wall time.
WALL = 1_800_000_000.0


def tracker(clock: FakeClock, rule: Rule = RULE, max_providers: int = 100) -> MemoryTracker:
    return MemoryTracker(rule, max_providers, clock)


def fail(t: MemoryTracker, provider: str, n: int = 1, **fields: Any) -> None:
    t.record_now([FailureEvent(provider, **fields) for _ in range(n)])


def epoch_stats(t: MemoryTracker, offset: float) -> list[ProviderStats]:
    """Every provider's figures with times in epoch seconds (so two clocks compare)."""
    now = t.clock()
    return [ProviderStats.of(p, w, now, -offset) for p, w, _ in t.export_entries()]


def save(t: MemoryTracker, silences: SilenceStore | None = None, wall: float = WALL) -> dict[str, Any]:
    offset = wall - t.clock()
    document = build_document(t, silences, offset=offset, saved_at=wall)
    return json.loads(encode(document))  # type: ignore[no-any-return]


def load(
    document: object, clock: FakeClock, wall: float, rule: Rule = RULE, max_providers: int = 100
) -> tuple[MemoryTracker, int]:
    t = tracker(clock, rule, max_providers)
    restored = restore(document, t, None, offset=wall - clock(), now=clock())
    return t, restored.providers


def test_a_round_trip_over_another_clock_keeps_every_figure() -> None:
    clock = FakeClock(1000.0)
    first = tracker(clock)
    fail(first, "openai", 3, api_key="sk-…abc", status=503, route="/v1/chat")
    clock.advance(1.0)
    fail(first, "openai", 3)  # the fifth alerts, the sixth is throttled
    clock.advance(2.0)
    fail(first, "anthropic", 2)
    document = save(first)
    assert document["version"] == VERSION
    assert document["saved_at"] == WALL
    later = FakeClock(50.0)  # the new process's monotonic clock, 10 s of wall time later
    second, count = load(document, later, WALL + 10.0)
    assert count == 2
    assert second.providers() == ["anthropic", "openai"]
    before = epoch_stats(first, WALL - clock())
    assert before
    # Ten seconds on: the same figures, with the first clock moved on as far.
    clock.advance(10.0)
    assert epoch_stats(second, WALL + 10.0 - later()) == epoch_stats(first, WALL - clock() + 10.0)
    [(_, window, samples)] = [e for e in second.export_entries() if e[0] == "openai"]
    assert window.throttled_since_alert == 1
    assert [event for _, event in samples] == [event for _, event in first.samples("openai")]
    # Saved at 1003 on the first clock; restored 10 s of wall time later at 50 on the second: 1000 -> 37.
    assert first.samples("openai")[0][0] == 1000.0
    assert samples[0][0] == pytest.approx(37.0, abs=1e-6)


def test_the_restored_cooldown_throttles_and_the_window_goes_on() -> None:
    clock = FakeClock(1000.0)
    first = tracker(clock)
    fail(first, "openai", 5)
    assert len(first.record_now([FailureEvent("openai")]).throttled) == 1
    later = FakeClock(7.0)
    second, _ = load(save(first), later, WALL + 30.0)
    result = second.record_now([FailureEvent("openai")] * 2)
    assert (result.throttled["openai"], result.triggers) == (2, [])
    later.advance(30.0)  # the cooldown ran from wall 1.8e9: ended now
    [trigger] = second.record_now([FailureEvent("openai")]).triggers
    assert trigger.count == 9
    assert trigger.throttled_since_last == 3
    assert trigger.episode_alerts == 2


def test_a_burst_in_progress_alerts_after_the_restore() -> None:
    clock = FakeClock(1000.0)
    first = tracker(clock)
    fail(first, "openai", 3)
    second, _ = load(save(first), FakeClock(5.0), WALL + 100.0)
    assert not second.record_now([FailureEvent("openai")]).triggers
    [trigger] = second.record_now([FailureEvent("openai")]).triggers
    assert (trigger.count, trigger.episode_alerts) == (5, 1)


def test_bucket_counts_are_rederived_on_the_new_clock() -> None:
    clock = FakeClock(1000.0)
    first = tracker(clock)
    for _ in range(40):  # 200 failures over 200 s: far more than the 5 arrival times kept
        fail(first, "openai", 5)
        clock.advance(5.0)
    [before] = first.all_stats_now()
    later = FakeClock(12_345.678)
    second, _ = load(save(first), later, WALL)
    [after] = second.all_stats_now()
    assert before.failures_in_window == 200
    assert abs(after.failures_in_window - before.failures_in_window) <= 5  # one bucket's worth, at most
    later.advance(150.0)
    clock.advance(150.0)
    [moved_on] = first.all_stats_now()
    assert abs(second.all_stats_now()[0].failures_in_window - moved_on.failures_in_window) <= 10


def test_expired_state_is_dropped_on_restore() -> None:
    clock = FakeClock(1000.0)
    first = tracker(clock, Rule(threshold=2, window=300.0, cooldown=60.0))
    fail(first, "old", 1)
    clock.advance(200.0)
    fail(first, "recent", 1)
    fail(first, "cooled", 2)  # alerts: cooldown and an episode
    assert first.resolve_due_now()[0] == []
    document = save(first)
    later = FakeClock(0.0)
    # 150 s later: "old" failed 350 s ago (out of the window), the others' failures are still in it.
    second, count = load(document, later, WALL + 150.0, Rule(threshold=2, window=300.0, cooldown=60.0))
    assert count == 2
    assert second.providers() == ["cooled", "recent"]
    [(_, window, _)] = [e for e in second.export_entries() if e[0] == "cooled"]
    assert window.cooldowns == [None]  # 150 s after the alert: its 60 s cooldown ended
    assert window.episode_start is not None
    # 400 s later every failure is out of the window, but the open episode keeps "cooled": it resolves at once.
    third, count = load(document, FakeClock(0.0), WALL + 400.0, Rule(threshold=2, window=300.0, cooldown=60.0))
    assert third.providers() == ["cooled"]
    resolutions, next_deadline = third.resolve_due_now()
    assert [r.provider for r in resolutions] == ["cooled"]
    assert next_deadline is None
    assert third.cleanup_now() == ["cooled"]


def test_the_rule_in_force_at_restore_time_judges_the_window() -> None:
    clock = FakeClock(1000.0)
    first = tracker(clock)
    fail(first, "openai", 3)
    # A rules reload while alertd was down: threshold 3 with a shorter window (so the buckets are rebuilt).
    second, _ = load(save(first), FakeClock(0.0), WALL + 1.0, Rule(threshold=3, window=120.0, cooldown=60.0))
    [trigger] = second.record_now([FailureEvent("openai")]).triggers
    assert trigger.count == 4
    assert trigger.rule.window == 120.0
    # Tiers now: the cooldowns go by level, and the untiered rule's one tier is at level "error".
    clock.advance(1.0)
    fail(first, "p", 5)
    tiers = Rule(threshold=5, window=300.0, cooldown=60.0, tiers=((5, "warning"), (10, "error")))
    document = save(first)
    assert document["providers"][-1]["levels"] == ["error"]
    third, _ = load(document, FakeClock(0.0), WALL + 2.0, tiers)
    [(_, window, _)] = [e for e in third.export_entries() if e[0] == "p"]
    assert window.cooldowns == [None, -2.0]  # the alert at wall WALL, 2 s ago: the error tier's cooldown
    # A document of an alertd that saved no levels: the one cooldown kept applies to each tier, as it did.
    del document["providers"][-1]["levels"]
    fourth, _ = load(document, FakeClock(0.0), WALL + 2.0, tiers)
    [(_, window, _)] = [e for e in fourth.export_entries() if e[0] == "p"]
    assert window.cooldowns == [-2.0, -2.0]


def test_restored_tier_cooldowns_go_by_level() -> None:
    clock = FakeClock(1000.0)
    old = Rule(threshold=2, window=300.0, cooldown=60.0, tiers=((2, "warning"), (4, "error"), (6, "fatal")))
    first = tracker(clock, old)
    fail(first, "p", 2)  # warning at 1000
    clock.advance(5.0)
    fail(first, "p", 2)  # error at 1005
    document = save(first)  # saved at wall WALL, clock 1005
    assert document["providers"][0]["levels"] == ["warning", "error", "fatal"]
    # The error tier at a new threshold keeps its own cooldown; warning is gone; info is new: none.
    new = Rule(threshold=3, window=300.0, cooldown=60.0, tiers=((3, "info"), (5, "error"), (8, "fatal")))
    second, _ = load(document, FakeClock(0.0), WALL + 10.0, new)
    [(_, window, _)] = [e for e in second.export_entries() if e[0] == "p"]
    assert window.cooldowns == [None, -10.0, None]
    # The same tiers: every cooldown as it was, each its own; and without levels, by index (same count).
    for doc in (document, {**document, "providers": [{**document["providers"][0], "levels": None}]}):
        third, _ = load(doc, FakeClock(0.0), WALL + 10.0, old)
        [(_, window, _)] = [e for e in third.export_entries() if e[0] == "p"]
        assert window.cooldowns == [-15.0, -10.0, None]


def test_past_the_cap_the_most_recently_seen_are_restored() -> None:
    clock = FakeClock(1000.0)
    first = tracker(clock)
    for name in ("a", "b", "c", "d"):
        fail(first, name)
        clock.advance(1.0)
    fail(first, "a")  # now the most recently seen
    second, count = load(save(first), FakeClock(0.0), WALL, max_providers=2)
    assert count == 2
    assert [p for p, _, _ in second.export_entries()] == ["d", "a"]


def test_silences_round_trip_and_bad_ones_are_state_errors() -> None:
    store = SilenceStore(new_id=iter(["s1", "s2"]).__next__)
    store.add("open*", WALL + 3600.0, "maintenance", "ops", WALL)
    store.add("x", WALL + 60.0, "short", None, WALL)
    store.expire("s2", WALL + 1.0)
    clock = FakeClock(1000.0)
    document = save(tracker(clock), store)
    restored_store = SilenceStore()
    t = tracker(FakeClock(0.0))
    restored = restore(document, t, restored_store, offset=WALL, now=0.0)
    assert restored.silences == 2
    assert restored_store.snapshot() == store.snapshot()
    bad = copy.deepcopy(document)
    bad["silences"][0]["comment"] = "x" * 5000
    with pytest.raises(StateError, match="comment"):
        restore(bad, tracker(FakeClock(0.0)), SilenceStore(), offset=WALL, now=0.0)
    bad["silences"][0] = {"id": "s"}
    with pytest.raises(StateError, match="silences"):
        restore(bad, tracker(FakeClock(0.0)), SilenceStore(), offset=WALL, now=0.0)


def valid_document() -> dict[str, Any]:
    clock = FakeClock(1000.0)
    first = tracker(clock)
    fail(first, "openai", 6, api_key="sk-…abc", status=503, timestamp=1.5)
    fail(first, "anthropic", 2)
    return save(first)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d.update(version=2), "version"),
        (lambda d: d.update(version=True), "version"),
        (lambda d: d.pop("saved_at"), "saved_at"),
        (lambda d: d.update(providers={}), "providers"),
        (lambda d: d["providers"][0].update(provider=""), "provider"),
        (lambda d: d["providers"][0].update(provider="a b"), "provider"),
        (lambda d: d["providers"][1].update(provider="openai"), "twice"),
        (lambda d: d["providers"][0]["recent"].insert(0, 2e9), "ascending"),
        (lambda d: d["providers"][0]["recent"].append(-1.0), "epoch"),
        (lambda d: d["providers"][0]["recent"].extend([2e9] * 10_001), "more than"),
        (lambda d: d["providers"][0].update(bucket_seconds=0), "bucket_seconds"),
        (lambda d: d["providers"][0]["buckets"].append([1, 2.0]), "bucket"),
        (lambda d: d["providers"][0]["buckets"][0].__setitem__(0, 0), "count"),
        (lambda d: d["providers"][0]["cooldowns"].__setitem__(0, "soon"), "cooldowns"),
        (lambda d: d["providers"][0].update(alert_tier=-1), "alert_tier"),
        (lambda d: d["providers"][0].update(levels="error"), "levels"),
        (lambda d: d["providers"][0]["levels"].append("fatal"), "levels"),
        (lambda d: d["providers"][0]["levels"].__setitem__(0, 3), "levels"),
        (lambda d: d["providers"][0]["levels"].__setitem__(0, ""), "levels"),
        (lambda d: d["providers"][0].update(throttled_since_alert=1.5), "throttled_since_alert"),
        (lambda d: d["providers"][0]["totals"].update(failures=2**60), "totals.failures"),
        (lambda d: d["providers"][0]["episode"].update(alerts=None), "episode.alerts"),
        (lambda d: d["providers"][0]["samples"][0]["event"].update(api_key=7), "api_key"),
        (lambda d: d["providers"][0]["samples"][0]["event"].update(raw_key="sk"), "unknown field"),
        (lambda d: d["providers"][0]["samples"][0]["event"].update(status=700), "status"),
        (lambda d: d["providers"][0]["samples"][0]["event"].pop("provider"), "provider"),
        (lambda d: d["providers"][0]["samples"].extend([{}] * 6), "more than"),
        (lambda d: d.update(silences=None), "silences"),
    ],
)
def test_a_wrong_shape_is_a_state_error_and_changes_nothing(mutate: Any, reason: str) -> None:
    document = valid_document()
    mutate(document)
    t = tracker(FakeClock(0.0))
    with pytest.raises(StateError, match=reason):
        restore(document, t, None, offset=WALL, now=0.0)
    assert t.tracked() == 0


@pytest.mark.parametrize(
    "data", [b"", b"{", b"\xff\xfe", b"NaN", b'{"a": Infinity}', b"[" * 100_000, b"1" * 5000, b'{"version":1}']
)
def test_bytes_that_are_not_a_document_are_state_errors(data: bytes) -> None:
    with pytest.raises(StateError):
        restore(decode(data), tracker(FakeClock(0.0)), SilenceStore(), offset=WALL, now=0.0)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(JSON)
def test_arbitrary_json_raises_nothing_but_state_error(value: object) -> None:
    with contextlib.suppress(StateError):
        restore(decode(json.dumps(value).encode()), tracker(FakeClock(0.0)), SilenceStore(), offset=WALL, now=0.0)


def _paths(value: object, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


VALID = valid_document()
PATHS = _paths(VALID)[1:]


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), JSON)
def test_a_valid_document_with_any_part_replaced_raises_nothing_but_state_error(
    path: tuple[Any, ...], value: object
) -> None:
    document = copy.deepcopy(VALID)
    target: Any = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    t = tracker(FakeClock(0.0))
    try:
        restore(document, t, SilenceStore(), offset=WALL, now=0.0)
    except StateError:
        assert t.tracked() == 0
    else:
        t.record_now([FailureEvent("openai")] * 6)
        t.all_stats_now()
        t.resolve_due_now()
