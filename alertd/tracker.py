"""Where provider windows live: the `Tracker` interface and its in-memory implementation.

The interface is async so that a shared tracker (Redis, for cluster mode) can sit behind it; the
in-memory tracker does its work synchronously and never awaits.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from alertd.event import FailureEvent
from alertd.window import Episode, ProviderWindow, Resolution, Rule, State, Verdict

RECENT_SAMPLES = 5
# How far from the least recently seen end eviction looks for an idle provider before it gives up.
EVICTION_SCAN = 32


@dataclass(frozen=True, slots=True)
class Trigger:
    """A failure that crossed the threshold outside the cooldown: the facts an alert is built from."""

    provider: str
    event: FailureEvent
    at: float
    count: int
    first_at: float
    throttled_since_last: int
    recent: tuple[tuple[float, FailureEvent], ...]
    rule: Rule
    # Decided by this process alone because the shared (Redis) tracker did not answer.
    fallback: bool = False
    # The firing episode this alert belongs to: its start, and this alert's rank in it (1 opens it).
    episode_started_at: float | None = None
    episode_alerts: int = 1
    # The tier reached: an index into rule.levels.
    tier: int = 0


@dataclass(slots=True)
class Recorded:
    """What one batch did: failures and throttled hits per provider, and the alerts to send."""

    failures: Counter[str] = field(default_factory=Counter)
    throttled: Counter[str] = field(default_factory=Counter)
    triggers: list[Trigger] = field(default_factory=list)
    admitted: list[str] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)
    # Episodes found past their deadline when their provider's next failure arrived.
    resolutions: list[Resolution] = field(default_factory=list)
    # Open episodes lost with their evicted provider (ALERTD_MAX_PROVIDERS reached while all were firing).
    dropped: list[Resolution] = field(default_factory=list)
    # Failures the provider's rule does not count, by (provider, reason): `status` or `error_type`.
    ignored: Counter[tuple[str, str]] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class ProviderStats:
    """A provider's figures for the query API; times are monotonic seconds."""

    provider: str
    state: State
    failures_in_window: int
    failures_total: int
    alerts_total: int
    throttled_total: int
    last_failure: float | None
    last_alert: float | None
    episode: Episode | None = None
    last_resolved: float | None = None

    @classmethod
    def of(cls, provider: str, window: ProviderWindow, now: float, offset: float = 0.0) -> ProviderStats:
        """The figures of `window` at `now`; `offset` is subtracted from its times (another clock's)."""
        last_failure, last_alert, last_resolved = window.last_failure, window.last_alert, window.last_resolved
        episode = window.episode
        if episode is not None and offset:
            episode = Episode(
                episode.started_at - offset,
                episode.alerts,
                episode.throttled,
                episode.failures,
                episode.last_hit - offset,
            )
        return cls(
            provider=provider,
            state=window.state(now),
            failures_in_window=window.count_in_window(now),
            failures_total=window.failures_total,
            alerts_total=window.alerts_total,
            throttled_total=window.throttled_total,
            last_failure=None if last_failure is None else last_failure - offset,
            last_alert=None if last_alert is None else last_alert - offset,
            episode=episode,
            last_resolved=None if last_resolved is None else last_resolved - offset,
        )


def counted(
    provider: str, rule: Rule, events: list[FailureEvent], ignored: Counter[tuple[str, str]]
) -> list[FailureEvent]:
    """The events `rule` counts; the others are tallied in `ignored` by (provider, reason)."""
    if rule.count_status is None and not rule.count_classes and not rule.ignore_error_types:
        return events
    kept = []
    for event in events:
        reason = rule.ignores(event.status, event.error_type)
        if reason is None:
            kept.append(event)
        else:
            ignored[provider, reason] += 1
    return kept


class Tracker(Protocol):
    """Keeps per-provider windows and applies the rule to each recorded failure."""

    async def record(self, events: Sequence[FailureEvent]) -> Recorded:
        """Weigh every event in its provider's window, in order, at the current time."""
        ...

    async def stats(self, provider: str) -> ProviderStats | None:
        """One provider's figures, or None if it is not tracked."""
        ...

    async def all_stats(self) -> list[ProviderStats]:
        """Every tracked provider's figures, sorted by provider."""
        ...

    async def cleanup(self) -> list[str]:
        """Forget idle providers; returns their names."""
        ...

    async def resolve_due(self) -> tuple[list[Resolution], float | None]:
        """Resolve the episodes whose deadline has passed; also returns the next deadline known, if any."""
        ...

    def set_rules(self, rule_for: Callable[[str], Rule]) -> None:
        """Judge each provider's next failures by `rule_for(provider)`; windows carry over."""
        ...

    def tracked(self) -> int:
        """How many providers this process tracks."""
        ...

    def status(self) -> dict[str, Any]:
        """`{"mode": ...}` (`memory`, `redis` or `redis-fallback`) and the backend's details."""
        ...


class _Entry:
    __slots__ = ("samples", "window")

    def __init__(self, rule: Rule) -> None:
        self.window = ProviderWindow(rule)
        self.samples: deque[tuple[float, FailureEvent]] = deque(maxlen=RECENT_SAMPLES)


class MemoryTracker:
    """The in-process tracker: at most `max_providers` windows, least recently seen first out."""

    def __init__(
        self,
        rule: Rule,
        max_providers: int,
        clock: Callable[[], float] = time.monotonic,
        rule_for: Callable[[str], Rule] | None = None,
    ) -> None:
        self.rule = rule
        self.max_providers = max_providers
        self.clock = clock
        self.rule_for: Callable[[str], Rule] = rule_for or (lambda _provider: rule)
        # Ordered from least to most recently seen, so eviction and idleness start at the front.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # (resolve deadline, provider) of open episodes, earliest first; a deadline a later threshold hit
        # moved is corrected when it comes up. At most one entry per provider.
        self._deadlines: list[tuple[float, str]] = []
        self._scheduled: set[str] = set()
        # Bumped by whatever may change the state worth saving (ingest, resolutions, cleanup, restores), so
        # that a periodic snapshot of an unchanged tracker can be skipped (alertd/state.py).
        self.changes = 0

    def record_now(self, events: Sequence[FailureEvent], *, decide: bool = True, fallback: bool = False) -> Recorded:
        """Synchronous `record`; with `decide` false, failures are only recorded (another tracker decides).

        `fallback` marks the triggers as decided here because the shared tracker did not answer.
        """
        now = self.clock()
        self.changes += 1
        result = Recorded()
        by_provider: dict[str, list[FailureEvent]] = {}
        for event in events:
            by_provider.setdefault(event.provider, []).append(event)
        for provider, events_of_provider in by_provider.items():
            rule = self.rule_for(provider)
            entry = self._entries.get(provider)
            if entry is None:
                entry = self._admit(provider, rule, now, result)
            else:
                self._entries.move_to_end(provider)
                if entry.window.rule is not rule:
                    entry.window.change_rule(rule)
            window = entry.window
            result.failures[provider] += len(events_of_provider)
            batch = counted(provider, rule, events_of_provider, result.ignored)
            if window.episode_start is not None:
                # Its deadline may have passed unnoticed: resolve before this batch is weighed.
                resolved = window.resolve_due(now)
                if resolved is not None:
                    result.resolutions.append(Resolution(provider, resolved, now))
            if not decide:
                for event in batch:
                    window.observe(now)
                    entry.samples.append((now, event))
            else:
                self._decide(provider, entry, batch, now, result, fallback=fallback)
        return result

    def _decide(
        self, provider: str, entry: _Entry, batch: list[FailureEvent], now: float, result: Recorded, *, fallback: bool
    ) -> None:
        window = entry.window
        rule = window.rule
        for event in batch:
            verdict = window.record(now)
            entry.samples.append((now, event))
            if verdict is Verdict.THROTTLED:
                result.throttled[provider] += 1
            elif verdict is Verdict.ALERT:
                if window.episode_alerts == 1 and provider not in self._scheduled:
                    self._scheduled.add(provider)
                    heapq.heappush(self._deadlines, (now + rule.resolve_seconds, provider))
                result.triggers.append(
                    Trigger(
                        provider=provider,
                        event=event,
                        at=now,
                        count=window.count_in_window(now),
                        first_at=window.first_in_window(now) or now,
                        throttled_since_last=window.mark_alert_sent(),
                        recent=tuple(entry.samples),
                        rule=rule,
                        fallback=fallback,
                        episode_started_at=window.episode_start,
                        episode_alerts=window.episode_alerts,
                        tier=window.alert_tier,
                    )
                )

    def set_rules(self, rule_for: Callable[[str], Rule]) -> None:
        """Judge each provider's next failures by `rule_for(provider)`; windows carry over.

        Open episodes take their new rule at once, so that a shorter RESOLVE_AFTER moves their deadline now.
        """
        self.rule_for = rule_for
        for provider, entry in self._entries.items():
            window = entry.window
            if window.episode_start is None:
                continue
            rule = rule_for(provider)
            if window.rule is not rule:
                window.change_rule(rule)
                deadline = window.resolve_deadline()
                if deadline is not None:
                    # Perhaps earlier than the entry already queued; a later duplicate is dropped when it comes up.
                    self._scheduled.add(provider)
                    heapq.heappush(self._deadlines, (deadline, provider))

    def _admit(self, provider: str, rule: Rule, now: float, result: Recorded) -> _Entry:
        if len(self._entries) >= self.max_providers:
            victim = self._pick_victim(now)
            dropped = self._entries.pop(victim).window.episode
            if dropped is not None:
                result.dropped.append(Resolution(victim, dropped, now))
            result.evicted.append(victim)
            if victim in result.admitted:  # admitted earlier in this batch: it never became visible
                result.admitted.remove(victim)
        entry = _Entry(rule)
        self._entries[provider] = entry
        result.admitted.append(provider)
        return entry

    def _pick_victim(self, now: float) -> str:
        # Prefer the least recently seen idle provider; when none is idle, the least recently seen one that
        # is not firing (its episode would be lost); when all are firing, the least recently seen.
        not_firing: str | None = None
        for scanned, (provider, entry) in enumerate(self._entries.items()):
            window = entry.window
            if window.is_idle(now):
                return provider
            if not_firing is None and window.episode_start is None:
                not_firing = provider
            if scanned >= EVICTION_SCAN:
                break
        return not_firing if not_firing is not None else next(iter(self._entries))

    def export_entries(self) -> list[tuple[str, ProviderWindow, tuple[tuple[float, FailureEvent], ...]]]:
        """Every tracked provider with its window and samples, least recently seen first (for the state file).

        The windows are the tracker's own: read them before anything else runs on the event loop.
        """
        return [(provider, entry.window, tuple(entry.samples)) for provider, entry in self._entries.items()]

    def import_entry(
        self, provider: str, window: ProviderWindow, samples: Sequence[tuple[float, FailureEvent]] = ()
    ) -> None:
        """Track `provider` with a restored `window` as the most recently seen; its open episode is scheduled.

        For a restore before any failure arrives: a provider already tracked is replaced, and past
        `max_providers` the least recently seen is dropped (without the bookkeeping of an eviction).
        """
        entry = _Entry(window.rule)
        entry.window = window
        entry.samples.extend(samples)
        self._entries.pop(provider, None)
        self._entries[provider] = entry
        while len(self._entries) > self.max_providers:
            self._entries.popitem(last=False)
        deadline = window.resolve_deadline()
        if deadline is not None and provider not in self._scheduled:
            self._scheduled.add(provider)
            heapq.heappush(self._deadlines, (deadline, provider))
        self.changes += 1

    def samples(self, provider: str) -> tuple[tuple[float, FailureEvent], ...]:
        """The provider's most recent failures seen by this process (at most RECENT_SAMPLES)."""
        entry = self._entries.get(provider)
        return () if entry is None else tuple(entry.samples)

    def providers(self) -> list[str]:
        """The tracked providers, sorted."""
        return sorted(self._entries)

    def stats_now(self, provider: str) -> ProviderStats | None:
        """Synchronous `stats`."""
        entry = self._entries.get(provider)
        return None if entry is None else self._stats(provider, entry, self.clock())

    def all_stats_now(self) -> list[ProviderStats]:
        """Synchronous `all_stats`."""
        now = self.clock()
        return [self._stats(p, self._entries[p], now) for p in sorted(self._entries)]

    def cleanup_now(self) -> list[str]:
        """Synchronous `cleanup`."""
        now = self.clock()
        idle = [p for p, e in self._entries.items() if e.window.is_idle(now)]
        for provider in idle:
            del self._entries[provider]
        if idle:
            self.changes += 1
        return idle

    def resolve_due_now(self) -> tuple[list[Resolution], float | None]:
        """Synchronous `resolve_due`."""
        now = self.clock()
        deadlines = self._deadlines
        resolutions: list[Resolution] = []
        while deadlines and deadlines[0][0] <= now:
            _, provider = heapq.heappop(deadlines)
            entry = self._entries.get(provider)
            deadline = None if entry is None else entry.window.resolve_deadline()
            if entry is None or deadline is None:
                self._scheduled.discard(provider)
            elif deadline > now:
                heapq.heappush(deadlines, (deadline, provider))
            else:
                self._scheduled.discard(provider)
                episode = entry.window.resolve_due(now)
                if episode is not None:
                    resolutions.append(Resolution(provider, episode, now))
        if resolutions:
            self.changes += 1
        return resolutions, deadlines[0][0] if deadlines else None

    @staticmethod
    def _stats(provider: str, entry: _Entry, now: float) -> ProviderStats:
        return ProviderStats.of(provider, entry.window, now)

    def tracked(self) -> int:
        """How many providers are tracked."""
        return len(self._entries)

    def status(self) -> dict[str, Any]:
        """The mode: every decision is this process's own."""
        return {"mode": "memory"}

    async def record(self, events: Sequence[FailureEvent]) -> Recorded:
        """Weigh every event in its provider's window, in order, at the current time."""
        return self.record_now(events)

    async def stats(self, provider: str) -> ProviderStats | None:
        """One provider's figures, or None if it is not tracked."""
        return self.stats_now(provider)

    async def all_stats(self) -> list[ProviderStats]:
        """Every tracked provider's figures, sorted by provider."""
        return self.all_stats_now()

    async def cleanup(self) -> list[str]:
        """Forget idle providers; returns their names."""
        return self.cleanup_now()

    async def resolve_due(self) -> tuple[list[Resolution], float | None]:
        """Resolve the episodes whose deadline has passed; also returns the next deadline known, if any."""
        return self.resolve_due_now()
