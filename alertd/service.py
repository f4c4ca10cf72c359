"""The alerting service: records events in the tracker, then counts, logs and sends the alerts.

It holds no sockets; `api` calls it from request handlers and `daemon` from its tasks.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from structlog.typing import FilteringBoundLogger

from alertd.alert import Alert, build_alert
from alertd.delivery import DeliveryLedger
from alertd.event import FailureEvent
from alertd.metrics import Metrics
from alertd.rules import RuleSet
from alertd.silences import MemorySilences, SilenceBackend, SilenceStore
from alertd.sink import AlertSink, NullResolutionSink, ResolutionSink
from alertd.timefmt import iso
from alertd.tracker import ProviderStats, Tracker
from alertd.window import Resolution

# A batch is weighed this many events at a time, letting other requests in between (all before the 202).
INGEST_CHUNK = 1000


# Sentry resolutions held back by silences, remembered at most (oldest dropped first).
MAX_OWED = 10_000
# How often held-back resolutions are looked at while some are pending (a silence may be expired early).
OWED_CHECK_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Cover:
    """The silence covering a provider: its id (`rules:<n>` for the rules file's n-th), end (epoch) and comment."""

    id: str
    ends_at: float
    comment: str

    def to_json(self) -> dict[str, Any]:
        """`{"id", "ends_at" (RFC 3339), "comment"}`, as the query API shows it."""
        return {"id": self.id, "ends_at": iso(self.ends_at), "comment": self.comment}


class AlertService:
    """Ties the tracker to metrics, the log and the alert sink."""

    def __init__(
        self,
        tracker: Tracker,
        metrics: Metrics,
        sink: AlertSink,
        log: FilteringBoundLogger,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.tracker = tracker
        self.metrics = metrics
        self.sink = sink
        self.log = log
        self.clock = clock
        self.wall_clock = wall_clock
        self.evicted_since_cleanup = 0
        self.accepted_total = 0
        self.deliveries = DeliveryLedger(getattr(tracker, "max_providers", 10_000))
        self.resolutions: ResolutionSink = NullResolutionSink()
        # API silences (POST /v1/silences): this process's own; cluster mode shares them in Redis.
        self.silences: SilenceBackend = MemorySilences(SilenceStore(), wall_clock)
        # Providers whose Sentry resolution a silence held back, and when that silence ends (epoch seconds).
        self._owed: dict[str, float] = {}
        # The rules in force (GET /v1/rules, declared silences); `daemon` sets them and reloads them.
        self.rules: RuleSet | None = None
        # Re-reads ALERTD_RULES_FILE (on SIGHUP); None when it is unset.
        self.reload_rules: Callable[[str], bool] | None = None
        self._deadlines_changed = anyio.Event()

    def epoch_offset(self) -> float:
        """Seconds to add to a monotonic time to get epoch time."""
        return self.wall_clock() - self.clock()

    async def ingest(self, events: Sequence[FailureEvent]) -> list[Alert]:
        """Weigh the events, count them, and fire the alerts they trigger; returns those alerts.

        A large batch is weighed in chunks with a checkpoint in between, so that one request cannot
        hold the event loop; every event is weighed and counted before this returns.
        """
        alerts: list[Alert] = []
        for start in range(0, len(events), INGEST_CHUNK):
            if start:
                await anyio.lowlevel.checkpoint()
            alerts.extend(await self._ingest_chunk(events[start : start + INGEST_CHUNK]))
        return alerts

    async def _ingest_chunk(self, events: Sequence[FailureEvent]) -> list[Alert]:
        recorded = await self.tracker.record(events)
        self.accepted_total += len(events)
        metrics = self.metrics
        self.evicted_since_cleanup += len(recorded.evicted)
        gone = metrics.count(recorded)
        for lost in recorded.dropped:
            self.log.warning(
                "episode_dropped",
                provider=lost.provider,
                episode_started_at=iso(lost.episode.started_at + self.epoch_offset()),
                alerts=lost.episode.alerts,
                detail="ALERTD_MAX_PROVIDERS reached with every provider firing: this episode was forgotten "
                "without a resolution",
            )
        if recorded.resolutions:
            await self._resolved(recorded.resolutions, gone)
        if not recorded.triggers:
            return []
        offset = self.epoch_offset()
        alerts = [build_alert(trigger, offset) for trigger in recorded.triggers]
        for alert in alerts:
            if alert.opens_episode:
                self.resolutions.cancel(alert.provider)
                self._owed.pop(alert.provider, None)
                if alert.provider not in gone:
                    metrics.set_firing(alert.provider, firing=True)
                self._deadlines_changed.set()
        fired = []
        for alert in alerts:
            silence = await self.silence_for(alert.provider)
            if silence is None:
                fired.append(self.fire(alert, tracked=alert.provider not in gone))
            else:
                self._silenced(alert, silence, tracked=alert.provider not in gone)
        return fired

    async def silence_for(self, provider: str) -> Cover | None:
        """The silence covering `provider` now, from the rules file or the API."""
        rules = self.rules
        if rules is not None and rules.silences:
            declared = rules.silence_for(provider, self.wall_clock())
            if declared is not None:
                # Declared silences have no id of their own: their place in the file names them.
                number = rules.silences.index(declared) + 1
                return Cover(f"rules:{number}", declared.ends_at, declared.comment)
        silence = await self.silences.covering(provider)
        if silence is None:
            return None
        return Cover(silence.id, silence.ends_at, silence.comment)

    def _silenced(self, alert: Alert, silence: Cover, *, tracked: bool) -> None:
        if tracked:
            self.metrics.silenced.labels(alert.provider).inc()
        self.log.info(
            "alert_silenced",
            provider=alert.provider,
            silence_id=silence.id,
            silenced_until=iso(silence.ends_at),
            event_id=alert.event_id,
            message=alert.message,
        )

    def apply_rules(self, rules: RuleSet) -> None:
        """Put `rules` in force: each provider's next failure is judged by its rule; windows carry over."""
        self.rules = rules
        self.tracker.set_rules(rules.core_rule_for)
        self._deadlines_changed.set()  # an open episode's deadline may be earlier now

    def deadlines_changed(self) -> anyio.Event:
        """An event set when an episode opens or rules change (a new deadline to wait for); fresh after each."""
        if self._deadlines_changed.is_set():
            self._deadlines_changed = anyio.Event()
        return self._deadlines_changed

    async def resolve_due(self) -> float | None:
        """Resolve the episodes whose deadline has passed; returns when to look again (monotonic), or None.

        Also sends the Sentry resolutions a silence held back, once no silence covers their provider.
        """
        resolutions, next_deadline = await self.tracker.resolve_due()
        if resolutions:
            await self._resolved(resolutions, set())
        next_owed = await self._send_owed()
        if next_owed is None:
            return next_deadline
        return next_owed if next_deadline is None else min(next_deadline, next_owed)

    async def _send_owed(self) -> float | None:
        """Resolve in Sentry the issues whose resolution a silence held back, once no silence covers them."""
        if not self._owed:
            return None
        now = self.wall_clock()
        for provider, ends_at in list(self._owed.items()):
            if ends_at > now:
                continue
            silence = await self.silence_for(provider)
            if silence is not None:
                self._owed[provider] = silence.ends_at
                continue
            del self._owed[provider]
            self.log.info("resolution_sent_after_silence", provider=provider)
            self.resolutions.resolve(provider)
        if not self._owed:
            return None
        # A silence expired early (DELETE) is noticed within OWED_CHECK_SECONDS.
        wait = min(min(self._owed.values()) - now, OWED_CHECK_SECONDS)
        return self.clock() + max(0.0, wait)

    async def _resolved(self, resolutions: list[Resolution], gone: set[str]) -> None:
        offset = self.epoch_offset()
        for resolution in resolutions:
            provider, episode = resolution.provider, resolution.episode
            if provider not in gone:
                self.metrics.count_resolution(provider)
            self.log.info(
                "alert_resolved",
                provider=provider,
                episode_started_at=iso(episode.started_at + offset),
                resolved_at=iso(resolution.at + offset),
                duration_seconds=round(resolution.at - episode.started_at, 3),
                last_threshold_hit_at=iso(episode.last_hit + offset),
                alerts=episode.alerts,
                throttled=episode.throttled,
                failures=episode.failures,
            )
            silence = await self.silence_for(provider)
            if silence is None:
                self.resolutions.resolve(provider)
            else:
                # Owed: sent once no silence covers the provider, unless its next episode opens first.
                self.log.info(
                    "resolution_silenced", provider=provider, silence_id=silence.id, until=iso(silence.ends_at)
                )
                self._owed[provider] = silence.ends_at
                if len(self._owed) > MAX_OWED:
                    self._owed.pop(next(iter(self._owed)))
                self._deadlines_changed.set()

    def fire(self, alert: Alert, *, tracked: bool = True) -> Alert:
        """Count, log and send one alert; returns it as sent, with its undelivered count."""
        if not alert.test:
            # Only a sink that reports delivery outcomes (Sentry) can leave alerts undelivered.
            reports = getattr(self.sink, "reports_outcomes", False)
            undelivered = self.deliveries.expect(alert.event_id, alert.provider) if reports else 0
            alert = dataclasses.replace(alert, undelivered_since_last=undelivered)
            if tracked:
                self.metrics.series(alert.provider)[1].inc()
        self.log.error("alert_fired", **alert.to_log_fields())
        self.sink.send(alert)
        return alert

    async def cleanup(self) -> list[str]:
        """Forget idle providers and their metric series; log evictions since the last cleanup."""
        forgotten = await self.tracker.cleanup()
        self.metrics.forget(forgotten)
        if self.evicted_since_cleanup:
            self.log.warning(
                "providers_evicted",
                count=self.evicted_since_cleanup,
                detail="ALERTD_MAX_PROVIDERS reached; least recently seen providers were forgotten",
            )
            self.evicted_since_cleanup = 0
        if forgotten:
            self.log.debug("providers_forgotten", count=len(forgotten))
        return forgotten

    def record_outcome(self, event_id: str, outcome: str) -> None:
        """Count a Sentry delivery outcome; called from the SDK's worker thread."""
        self.metrics.sentry_events.labels(outcome).inc()
        self.deliveries.settle(event_id, delivered=outcome == "sent")
        if outcome != "sent":
            self.log.warning("sentry_event_undelivered", event_id=event_id, outcome=outcome)

    async def describe(self, stats: ProviderStats) -> dict[str, Any]:
        """A provider's figures as the query API shows them, with the silence covering it, if any."""
        offset = self.epoch_offset()

        def when(mono: float | None) -> str | None:
            return None if mono is None else iso(mono + offset)

        silence = await self.silence_for(stats.provider)
        episode = stats.episode
        shown: dict[str, Any] = {"state": "ok" if episode is None else "firing"}
        if episode is not None:
            shown |= {
                "started_at": when(episode.started_at),
                "alerts": episode.alerts,
                "throttled": episode.throttled,
                "failures": episode.failures,
                "last_threshold_hit_at": when(episode.last_hit),
            }
        shown["last_resolved_at"] = when(stats.last_resolved)
        return {
            "provider": stats.provider,
            "state": stats.state.value,
            "failures_in_window": stats.failures_in_window,
            "failures_total": stats.failures_total,
            "alerts_total": stats.alerts_total,
            "throttled_total": stats.throttled_total,
            "last_failure_at": when(stats.last_failure),
            "last_alert_at": when(stats.last_alert),
            "episode": shown,
            "silenced_by": None if silence is None else silence.to_json(),
        }
