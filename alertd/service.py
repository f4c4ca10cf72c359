"""The alerting service: records events in the tracker, then counts, logs and sends the alerts.

It holds no sockets; `api` calls it from request handlers and `daemon` from its tasks.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import anyio
from structlog.typing import FilteringBoundLogger

from alertd.alert import Alert, build_alert, iso
from alertd.event import FailureEvent
from alertd.metrics import Metrics
from alertd.sink import AlertSink
from alertd.tracker import ProviderStats, Tracker

# A batch is weighed this many events at a time, letting other requests in between (all before the 202).
INGEST_CHUNK = 512
# Alerts whose delivery outcome is still unknown, remembered at most (the SDK queue holds 100).
MAX_PENDING_DELIVERIES = 10_000


class DeliveryLedger:
    """Per provider: how many alerts could not be delivered, and how many of those a delivered alert reported.

    Outcomes arrive from the SDK's worker thread; a lock guards the few dict operations. Both maps are
    bounded: providers by `max_providers` (least recently used out), pending alerts by MAX_PENDING_DELIVERIES.
    """

    def __init__(self, max_providers: int) -> None:
        self._lock = threading.Lock()
        self._max_providers = max_providers
        # provider -> [alerts known undelivered, of those: reported by a delivered alert]
        self._providers: OrderedDict[str, list[int]] = OrderedDict()
        # event id -> (provider, undelivered count when that alert was built)
        self._pending: OrderedDict[str, tuple[str, int]] = OrderedDict()

    def _entry(self, provider: str) -> list[int]:
        entry = self._providers.get(provider)
        if entry is None:
            entry = self._providers[provider] = [0, 0]
            if len(self._providers) > self._max_providers:
                self._providers.popitem(last=False)
        else:
            self._providers.move_to_end(provider)
        return entry

    def expect(self, event_id: str, provider: str) -> int:
        """Note an alert about to be sent; returns how many undelivered alerts it must report."""
        with self._lock:
            lost, reported = self._entry(provider)
            self._pending[event_id] = (provider, lost)
            if len(self._pending) > MAX_PENDING_DELIVERIES:
                self._pending.popitem(last=False)
            return max(0, lost - reported)

    def settle(self, event_id: str, *, delivered: bool) -> None:
        """Record the outcome of an alert; unknown ids (alertd's own errors) are ignored."""
        with self._lock:
            pending = self._pending.pop(event_id, None)
            if pending is None:
                return
            provider, lost_when_built = pending
            entry = self._entry(provider)
            if delivered:
                entry[1] = max(entry[1], lost_when_built)
            else:
                entry[0] += 1

    def pending(self) -> int:
        """Alerts sent whose outcome is not known yet."""
        with self._lock:
            return len(self._pending)


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
        if recorded.evicted:
            metrics.forget(recorded.evicted)
            metrics.evicted.inc(len(recorded.evicted))
            self.evicted_since_cleanup += len(recorded.evicted)
        # Providers evicted by this batch and not tracked at its end get no series (the cap bounds them).
        gone = set(recorded.evicted).difference(recorded.admitted)
        for provider in recorded.admitted:
            metrics.add_provider(provider)
        for provider, count in recorded.failures.items():
            if provider not in gone:
                metrics.series(provider)[0].inc(count)
        for provider, count in recorded.throttled.items():
            if provider not in gone:
                metrics.series(provider)[2].inc(count)
        if not recorded.triggers:
            return []
        offset = self.epoch_offset()
        alerts = [build_alert(trigger, offset) for trigger in recorded.triggers]
        return [self.fire(alert, tracked=alert.provider not in gone) for alert in alerts]

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
