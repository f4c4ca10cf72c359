"""The detection rule and one provider's sliding window. Pure: time is passed in.

The decision needs only the last THRESHOLD arrival times: an alert fires when the THRESHOLD-th most
recent failure is no older than WINDOW and no alert fired within the last COOLDOWN. Counts for
reporting come from a bounded bucketed counter, exact whenever the window holds fewer than
THRESHOLD failures and otherwise within one bucket (WINDOW / BUCKETS) of the truth.

Episodes: a failure that meets the threshold rule is a threshold hit, whether it alerts or is
throttled. An alert while the provider is not firing opens a firing episode; the episode resolves
once RESOLVE_AFTER passes with no threshold hit, counted from the last one's arrival. A resolution
ends the cooldown, so the next threshold hit alerts at once and opens the next episode.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

BUCKETS = 60


class Verdict(enum.Enum):
    """What one failure did to its provider."""

    RECORDED = "recorded"
    ALERT = "alert"
    THROTTLED = "throttled"


class State(enum.Enum):
    """A provider's state, as the query API shows it."""

    OK = "ok"
    ALERTING = "alerting"
    COOLDOWN = "cooldown"


DEFAULT_LEVEL = "error"


@dataclass(frozen=True, slots=True)
class Rule:
    """THRESHOLD failures within WINDOW seconds alert, at most once per COOLDOWN seconds.

    An episode resolves RESOLVE_AFTER seconds after its last threshold hit (None: WINDOW seconds).
    With TIERS, `(threshold, level)` pairs in ascending order, the highest tier reached decides: each
    tier has its own cooldown, and THRESHOLD is the lowest tier's. Failures whose error type is in
    IGNORE_ERROR_TYPES, or whose status is neither in COUNT_STATUS nor of a class in COUNT_CLASSES
    (when either is set), do not count; a failure without a status always counts.
    """

    threshold: int = 5
    window: float = 300.0
    cooldown: float = 60.0
    resolve_after: float | None = None
    tiers: tuple[tuple[int, str], ...] = ()
    count_status: frozenset[int] | None = None
    count_classes: frozenset[int] = frozenset()
    ignore_error_types: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.threshold < 1 or not self.window > 0 or not self.cooldown >= 0:
            raise ValueError(f"invalid rule {self}")
        if self.resolve_after is not None and not self.resolve_after > 0:
            raise ValueError(f"invalid rule {self}")
        thresholds = [threshold for threshold, _ in self.tiers]
        if self.tiers and (thresholds != sorted(set(thresholds)) or thresholds[0] != self.threshold):
            raise ValueError(f"invalid tiers {self.tiers}: ascending, distinct, the first one at THRESHOLD")

    @property
    def resolve_seconds(self) -> float:
        """Seconds without a threshold hit after which an episode resolves."""
        return self.window if self.resolve_after is None else self.resolve_after

    @property
    def levels(self) -> tuple[tuple[int, str], ...]:
        """The tiers, or the one implicit tier `(THRESHOLD, "error")`."""
        return self.tiers or ((self.threshold, DEFAULT_LEVEL),)

    @property
    def capacity(self) -> int:
        """How many arrival times the decision needs: the highest tier's threshold."""
        return self.tiers[-1][0] if self.tiers else self.threshold

    def ignores(self, status: int | None, error_type: str | None) -> str | None:
        """Why a failure does not count (`error_type` or `status`), or None when it counts."""
        if error_type is not None and error_type in self.ignore_error_types:
            return "error_type"
        if status is None or (self.count_status is None and not self.count_classes):
            return None
        if (self.count_status is not None and status in self.count_status) or status // 100 in self.count_classes:
            return None
        return "status"


def carry_cooldowns(
    old_levels: Sequence[str], cooldowns: Sequence[float | None], new_levels: Sequence[str]
) -> list[float | None]:
    """The cooldowns per tier of a rule with `new_levels`, carried over by level from a rule with `old_levels`.

    The n-th tier of a level takes the cooldown of the old rule's n-th tier of that level; a tier whose level
    the old rule lacks (or had fewer times) starts with none. An untiered rule's one tier is at level "error".
    """
    if len(old_levels) != len(cooldowns):
        raise ValueError("one cooldown per old level")
    carried: dict[tuple[str, int], float | None] = {}
    seen: dict[str, int] = {}
    for level, since in zip(old_levels, cooldowns, strict=True):
        nth = seen.get(level, 0)
        seen[level] = nth + 1
        carried[(level, nth)] = since
    out: list[float | None] = []
    seen = {}
    for level in new_levels:
        nth = seen.get(level, 0)
        seen[level] = nth + 1
        out.append(carried.get((level, nth)))
    return out


@dataclass(frozen=True, slots=True)
class Episode:
    """A firing episode's figures; times are monotonic seconds."""

    started_at: float
    alerts: int
    throttled: int
    failures: int
    last_hit: float


@dataclass(frozen=True, slots=True)
class Resolution:
    """An episode that resolved at `at` (its deadline, or later when nobody looked earlier)."""

    provider: str
    episode: Episode
    at: float


class ProviderWindow:
    """One provider's recent failures and alert history, in monotonic seconds."""

    __slots__ = (
        "_buckets",
        "_width",
        "alert_tier",
        "alerts_total",
        "cooldowns",
        "episode_alerts",
        "episode_failures",
        "episode_start",
        "episode_throttled",
        "failures_total",
        "last_alert",
        "last_hit",
        "last_resolved",
        "recent",
        "rule",
        "throttled_since_alert",
        "throttled_total",
    )

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.recent: deque[float] = deque(maxlen=rule.capacity)
        self._width = rule.window / BUCKETS
        # [bucket index, count, first arrival, last arrival]; at most BUCKETS + 1 entries.
        self._buckets: deque[list[float]] = deque()
        self.failures_total = 0
        self.alerts_total = 0
        self.throttled_total = 0
        self.throttled_since_alert = 0
        self.last_alert: float | None = None
        # Per tier, the alert its cooldown runs from; a resolution clears them (last_alert stays, for reporting).
        self.cooldowns: list[float | None] = [None] * len(rule.levels)
        # The tier of the last ALERT verdict (an index into rule.levels).
        self.alert_tier = 0
        # The open episode, if any: its start (None when not firing), counts, and last threshold hit.
        self.episode_start: float | None = None
        self.episode_alerts = 0
        self.episode_throttled = 0
        self.episode_failures = 0
        self.last_hit = 0.0
        self.last_resolved: float | None = None

    @classmethod
    def restore(
        cls,
        rule: Rule,
        recent: list[float],
        buckets: list[list[float]],
        *,
        last_alert: float | None,
        totals: tuple[int, int, int] = (0, 0, 0),
    ) -> ProviderWindow:
        """A window rebuilt from stored state (cluster mode): the same methods then read it."""
        window = cls(rule)
        window.recent.extend(recent)
        window._buckets.extend(buckets)
        window.last_alert = last_alert
        window.cooldowns = [last_alert] * len(rule.levels)
        window.failures_total, window.alerts_total, window.throttled_total = totals
        return window

    def observe(self, now: float) -> None:
        """Record one failure at `now` without applying the rule (another place decides)."""
        self.recent.append(now)
        self.failures_total += 1
        self._count(now)

    def record(self, now: float) -> Verdict:
        """Record one failure at `now` and say whether it alerts, is throttled, or neither.

        Call `resolve_due(now)` first: an episode whose deadline has passed must resolve before
        this failure is weighed, or it would wrongly extend that episode.
        """
        rule = self.rule
        recent = self.recent
        recent.append(now)
        self.failures_total += 1
        self._count(now)
        firing = self.episode_start is not None
        if firing:
            self.episode_failures += 1
        tier = self._tier_reached(now)
        if tier < 0:
            return Verdict.RECORDED
        since = self.cooldowns[tier]
        if since is not None and now - since < rule.cooldown:
            self.throttled_total += 1
            self.throttled_since_alert += 1
            if firing:
                self.episode_throttled += 1
                self.last_hit = now
            return Verdict.THROTTLED
        self.cooldowns[tier] = self.last_alert = self.last_hit = now
        self.alert_tier = tier
        self.alerts_total += 1
        if firing:
            self.episode_alerts += 1
        else:
            self.episode_start = now
            self.episode_alerts = 1
            self.episode_throttled = 0
            self.episode_failures = self.count_in_window(now)
        return Verdict.ALERT

    def _tier_reached(self, now: float) -> int:
        """The highest tier whose threshold is met at `now` (an index into rule.levels), or -1."""
        recent = self.recent
        window = self.rule.window
        size = len(recent)
        levels = self.rule.levels
        for index in range(len(levels) - 1, -1, -1):
            threshold = levels[index][0]
            if size >= threshold and now - recent[-threshold] <= window:
                return index
        return -1

    def change_rule(self, rule: Rule) -> None:
        """Judge the next failures by `rule`: recent failures and the episode carry over, cooldowns by level.

        Each tier of `rule` keeps the cooldown of the old rule's tier at its level (see `carry_cooldowns`), so
        a threshold change keeps each tier's own cooldown and a tier at a new level starts with none.
        """
        if rule == self.rule:
            self.rule = rule
            return
        old = self.rule
        self.rule = rule
        self.recent = deque(self.recent, maxlen=rule.capacity)
        if rule.window != old.window:
            # Counts restart from the arrival times kept; the older part of the window is estimated no more.
            self._width = rule.window / BUCKETS
            self._buckets = deque()
            for at in self.recent:
                self._count(at)
        self.cooldowns = carry_cooldowns(
            [level for _, level in old.levels], self.cooldowns, [level for _, level in rule.levels]
        )
        self.alert_tier = min(self.alert_tier, len(rule.levels) - 1)

    @property
    def episode(self) -> Episode | None:
        """The open episode's figures, or None when the provider is not firing."""
        start = self.episode_start
        if start is None:
            return None
        return Episode(start, self.episode_alerts, self.episode_throttled, self.episode_failures, self.last_hit)

    def resolve_deadline(self) -> float | None:
        """When the open episode resolves unless another threshold hit comes first; None when not firing."""
        return None if self.episode_start is None else self.last_hit + self.rule.resolve_seconds

    def resolve_due(self, now: float) -> Episode | None:
        """Resolve the open episode if its deadline is reached at `now`; returns the episode resolved."""
        if self.episode_start is None or now < self.last_hit + self.rule.resolve_seconds:
            return None
        episode = self.episode
        self.episode_start = None
        self.cooldowns = [None] * len(self.cooldowns)
        self.last_resolved = now
        return episode

    def _count(self, now: float) -> None:
        index = math.floor(now / self._width)
        buckets = self._buckets
        if buckets and buckets[-1][0] == index:
            bucket = buckets[-1]
            bucket[1] += 1
            bucket[3] = now
        else:
            buckets.append([index, 1, now, now])
            oldest = math.floor((now - self.rule.window) / self._width)
            while buckets[0][0] < oldest:
                buckets.popleft()

    @property
    def bucket_seconds(self) -> float:
        """The width of one counting bucket: WINDOW / BUCKETS of the rule the buckets were counted under."""
        return self._width

    def bucket_counts(self) -> list[tuple[int, float, float]]:
        """The counting buckets as `(count, first arrival, last arrival)`, oldest first (for the state file)."""
        return [(int(b[1]), b[2], b[3]) for b in self._buckets]

    def load_buckets(self, buckets: list[tuple[int, float, float]]) -> None:
        """Replace the counting buckets with `(count, first, last)` triples, oldest first, in this clock's time.

        Each bucket's index is derived again from its last arrival (the clock may be another process's);
        triples that land in one index are merged, so the bound of BUCKETS + 1 entries still holds.
        """
        width = self._width
        loaded: deque[list[float]] = deque()
        for count, first, last in buckets:
            index = math.floor(last / width)
            if loaded and loaded[-1][0] >= index:
                merged = loaded[-1]
                merged[1] += count
                merged[2] = min(merged[2], first)
                merged[3] = max(merged[3], last)
            else:
                loaded.append([index, count, first, last])
        self._buckets = loaded

    def mark_alert_sent(self) -> int:
        """Reset the throttled-hits counter after an alert; returns the hits it had counted."""
        hits, self.throttled_since_alert = self.throttled_since_alert, 0
        return hits

    @property
    def last_failure(self) -> float | None:
        """Arrival time of the most recent failure."""
        return self.recent[-1] if self.recent else None

    def count_in_window(self, now: float) -> int:
        """Failures no older than WINDOW at `now` (see the module docstring for its precision)."""
        cutoff = now - self.rule.window
        recent = self.recent
        if len(recent) < self.rule.capacity or recent[0] < cutoff:
            return sum(1 for t in recent if t >= cutoff)
        estimate = sum(int(b[1]) for b in self._live_buckets(cutoff))
        return max(estimate, len(recent))

    def _live_buckets(self, cutoff: float) -> list[list[float]]:
        """Buckets holding at least one failure no older than `cutoff`."""
        oldest = math.floor(cutoff / self._width)
        return [b for b in self._buckets if b[0] >= oldest and b[3] >= cutoff]

    def first_in_window(self, now: float) -> float | None:
        """Arrival time of the oldest failure no older than WINDOW (to one bucket), or None."""
        cutoff = now - self.rule.window
        recent = self.recent
        if len(recent) < self.rule.capacity or recent[0] < cutoff:
            return next((t for t in recent if t >= cutoff), None)
        live = self._live_buckets(cutoff)
        return max(live[0][2], cutoff) if live else recent[0]

    def threshold_met(self, now: float) -> bool:
        """True while the THRESHOLD-th most recent failure is no older than WINDOW."""
        recent = self.recent
        threshold = self.rule.threshold
        return len(recent) >= threshold and now - recent[-threshold] <= self.rule.window

    def in_cooldown(self, now: float) -> bool:
        """True while some tier's cooldown runs (a new hit at that tier would be throttled)."""
        cooldown = self.rule.cooldown
        return any(since is not None and now - since < cooldown for since in self.cooldowns)

    def state(self, now: float) -> State:
        """ALERTING while the threshold is met, else COOLDOWN while hits would be throttled, else OK."""
        if self.threshold_met(now):
            return State.ALERTING
        return State.COOLDOWN if self.in_cooldown(now) else State.OK

    def is_idle(self, now: float) -> bool:
        """True when nothing is left in the window, no cooldown is to be remembered and no episode is open."""
        last = self.last_failure
        if self.episode_start is not None:
            return False
        return (last is None or now - last > self.rule.window) and not self.in_cooldown(now)
