"""alertd's Prometheus metrics, on a registry the caller owns."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Info

from alertd import __version__

SENTRY_OUTCOMES = ("sent", "queue_overflow", "rate_limited", "network_error", "http_error")
REJECT_REASONS = (
    "unauthorized",
    "unsupported_media_type",
    "body_too_large",
    "invalid_json",
    "invalid_event",
    "method_not_allowed",
    "invalid_body",
    "incomplete_body",
    "too_many_connections",
)


class Metrics:
    """Every metric alertd exports. Per-provider series exist only while the provider is tracked."""

    def __init__(self, registry: CollectorRegistry, tracked: Callable[[], int]) -> None:
        self.registry = registry
        # Each tracked provider's (failures, alerts, throttled) children: labels() takes a lock and checks
        # the labels on every call, so the hot path looks them up once per provider, not once per request.
        self._series: dict[str, tuple[Any, Any, Any]] = {}
        self.failures = Counter(
            "alertd_failures", "Upstream failures accepted, by provider.", ["provider"], registry=registry
        )
        self.alerts = Counter("alertd_alerts", "Alerts fired, by provider.", ["provider"], registry=registry)
        self.throttled = Counter(
            "alertd_alerts_throttled",
            "Threshold hits suppressed by the cooldown, by provider.",
            ["provider"],
            registry=registry,
        )
        self.sentry_events = Counter(
            "alertd_sentry_events",
            "Sentry events (alerts and alertd's own errors) by delivery outcome.",
            ["outcome"],
            registry=registry,
        )
        self.rejected = Counter(
            "alertd_ingest_rejected", "Ingest requests rejected, by reason.", ["reason"], registry=registry
        )
        self.evicted = Counter(
            "alertd_providers_evicted",
            "Providers evicted because ALERTD_MAX_PROVIDERS was reached.",
            registry=registry,
        )
        self.tracked = Gauge("alertd_tracked_providers", "Providers currently tracked.", registry=registry)
        self.tracked.set_function(lambda: float(tracked()))
        Info("alertd_build", "alertd's version.", registry=registry).info({"version": __version__})
        for outcome in SENTRY_OUTCOMES:
            self.sentry_events.labels(outcome)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)

    def add_provider(self, provider: str) -> None:
        """Create the provider's series at zero, so the first increase shows up in rate()."""
        self.series(provider)

    def series(self, provider: str) -> tuple[Any, Any, Any]:
        """The provider's (failures, alerts, throttled) counters, created at zero on first use."""
        found = self._series.get(provider)
        if found is None:
            found = self._series[provider] = (
                self.failures.labels(provider),
                self.alerts.labels(provider),
                self.throttled.labels(provider),
            )
        return found

    def forget(self, providers: Iterable[str]) -> None:
        """Remove the series of providers that are no longer tracked."""
        for provider in providers:
            self._series.pop(provider, None)
            for counter in (self.failures, self.alerts, self.throttled):
                with contextlib.suppress(KeyError):
                    counter.remove(provider)


BACKEND_ERROR_REASONS = ("timeout", "connection", "auth", "response", "other")


class BackendMetrics:
    """Cluster mode's own metrics (ALERTD_REDIS_URL set): is Redis answering, and why it did not."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.up = Gauge(
            "alertd_backend_up", "1 while Redis answers, 0 while alerts are decided locally.", registry=registry
        )
        self.errors = Counter(
            "alertd_backend_errors", "Failed or timed-out Redis calls, by reason.", ["reason"], registry=registry
        )
        for reason in BACKEND_ERROR_REASONS:
            self.errors.labels(reason)
