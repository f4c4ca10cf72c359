"""The alerting service: records events in the tracker, then counts, logs and sends the alerts.

It holds no sockets; `api` calls it from request handlers and `daemon` from its tasks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from structlog.typing import FilteringBoundLogger

from alertd.alert import Alert, build_alert, iso
from alertd.event import FailureEvent
from alertd.metrics import Metrics
from alertd.sink import AlertSink
from alertd.tracker import ProviderStats, Tracker


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

    def epoch_offset(self) -> float:
        """Seconds to add to a monotonic time to get epoch time."""
        return self.wall_clock() - self.clock()

    async def ingest(self, events: Sequence[FailureEvent]) -> list[Alert]:
        """Weigh the events, count them, and fire the alerts they trigger; returns those alerts."""
        recorded = await self.tracker.record(events)
        metrics = self.metrics
        if recorded.evicted:
            metrics.forget(recorded.evicted)
            metrics.evicted.inc(len(recorded.evicted))
            self.evicted_since_cleanup += len(recorded.evicted)
        for provider in recorded.admitted:
            metrics.add_provider(provider)
        for provider, count in recorded.failures.items():
            metrics.failures.labels(provider).inc(count)
        for provider, count in recorded.throttled.items():
            metrics.throttled.labels(provider).inc(count)
        if not recorded.triggers:
            return []
        offset = self.epoch_offset()
        alerts = [build_alert(trigger, offset) for trigger in recorded.triggers]
        for alert in alerts:
            self.fire(alert)
        return alerts

    def fire(self, alert: Alert) -> None:
        """Count, log and send one alert."""
        if not alert.test:
            self.metrics.alerts.labels(alert.provider).inc()
        self.log.error("alert_fired", **alert.to_log_fields())
        self.sink.send(alert)

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
        if outcome != "sent":
            self.log.warning("sentry_event_undelivered", event_id=event_id, outcome=outcome)

    def describe(self, stats: ProviderStats) -> dict[str, Any]:
        """A provider's figures as the query API shows them."""
        offset = self.epoch_offset()

        def when(mono: float | None) -> str | None:
            return None if mono is None else iso(mono + offset)

        return {
            "provider": stats.provider,
            "state": stats.state.value,
            "failures_in_window": stats.failures_in_window,
            "failures_total": stats.failures_total,
            "alerts_total": stats.alerts_total,
            "throttled_total": stats.throttled_total,
            "last_failure_at": when(stats.last_failure),
            "last_alert_at": when(stats.last_alert),
        }
