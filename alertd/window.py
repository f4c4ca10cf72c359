"""The detection rule and one provider's sliding window. Pure: time is passed in.

The decision needs only the last THRESHOLD arrival times: an alert fires when the THRESHOLD-th most
recent failure is no older than WINDOW and no alert fired within the last COOLDOWN. Counts for
reporting come from a bounded bucketed counter, exact whenever the window holds fewer than
THRESHOLD failures and otherwise within one bucket (WINDOW / BUCKETS) of the truth.
"""

from __future__ import annotations

import enum
import math
from collections import deque
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


@dataclass(frozen=True, slots=True)
class Rule:
    """THRESHOLD failures within WINDOW seconds alert, at most once per COOLDOWN seconds."""

    threshold: int = 5
    window: float = 300.0
    cooldown: float = 60.0

    def __post_init__(self) -> None:
        if self.threshold < 1 or not self.window > 0 or not self.cooldown >= 0:
            raise ValueError(f"invalid rule {self}")


class ProviderWindow:
    """One provider's recent failures and alert history, in monotonic seconds."""

    __slots__ = (
        "_buckets",
        "_width",
        "alerts_total",
        "failures_total",
        "last_alert",
        "recent",
        "rule",
        "throttled_since_alert",
        "throttled_total",
    )

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.recent: deque[float] = deque(maxlen=rule.threshold)
        self._width = rule.window / BUCKETS
        # [bucket index, count, first arrival, last arrival]; at most BUCKETS + 1 entries.
        self._buckets: deque[list[float]] = deque()
        self.failures_total = 0
        self.alerts_total = 0
        self.throttled_total = 0
        self.throttled_since_alert = 0
        self.last_alert: float | None = None

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
        window.failures_total, window.alerts_total, window.throttled_total = totals
        return window

    def observe(self, now: float) -> None:
        """Record one failure at `now` without applying the rule (another place decides)."""
        self.recent.append(now)
        self.failures_total += 1
        self._count(now)

    def record(self, now: float) -> Verdict:
        """Record one failure at `now` and say whether it alerts, is throttled, or neither."""
        rule = self.rule
        recent = self.recent
        recent.append(now)
        self.failures_total += 1
        self._count(now)
        if len(recent) < rule.threshold or now - recent[0] > rule.window:
            return Verdict.RECORDED
        if self.last_alert is not None and now - self.last_alert < rule.cooldown:
            self.throttled_total += 1
            self.throttled_since_alert += 1
            return Verdict.THROTTLED
        self.last_alert = now
        self.alerts_total += 1
        return Verdict.ALERT

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
        if len(recent) < self.rule.threshold or recent[0] < cutoff:
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
        if len(recent) < self.rule.threshold or recent[0] < cutoff:
            return next((t for t in recent if t >= cutoff), None)
        live = self._live_buckets(cutoff)
        return max(live[0][2], cutoff) if live else recent[0]

    def threshold_met(self, now: float) -> bool:
        """True while the THRESHOLD-th most recent failure is no older than WINDOW."""
        recent = self.recent
        return len(recent) == self.rule.threshold and now - recent[0] <= self.rule.window

    def in_cooldown(self, now: float) -> bool:
        """True while a new threshold hit would be throttled."""
        return self.last_alert is not None and now - self.last_alert < self.rule.cooldown

    def state(self, now: float) -> State:
        """ALERTING while the threshold is met, else COOLDOWN while hits would be throttled, else OK."""
        if self.threshold_met(now):
            return State.ALERTING
        return State.COOLDOWN if self.in_cooldown(now) else State.OK

    def is_idle(self, now: float) -> bool:
        """True when nothing is left in the window and no cooldown is to be remembered."""
        last = self.last_failure
        return (last is None or now - last > self.rule.window) and not self.in_cooldown(now)
