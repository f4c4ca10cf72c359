"""alertd's Prometheus metrics, on a registry the caller owns."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Info

from alertd import __version__
from alertd.resolver import OUTCOMES as SENTRY_API_OUTCOMES
from alertd.tracker import Recorded

SENTRY_OUTCOMES = ("sent", "queue_overflow", "rate_limited", "network_error", "http_error")
IGNORE_REASONS = ("status", "error_type")
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
        self.ignored = Counter(
            "alertd_failures_ignored",
            "Failures the provider's rule does not count, by provider and reason (status or error_type).",
            ["provider", "reason"],
            registry=registry,
        )
        self.silenced = Counter(
            "alertd_alerts_silenced",
            "Alerts a silence suppressed (they start the cooldown as a sent alert would), by provider.",
            ["provider"],
            registry=registry,
        )
        self.resolved = Counter(
            "alertd_alerts_resolved",
            "Firing episodes resolved (RESOLVE_AFTER passed with no threshold hit), by provider.",
            ["provider"],
            registry=registry,
        )
        self.firing = Gauge(
            "alertd_provider_firing",
            "1 while the provider's firing episode is open, 0 after it resolved (until the provider is forgotten).",
            ["provider"],
            registry=registry,
        )
        self.sentry_api_requests = Counter(
            "alertd_sentry_api_requests",
            "Calls to Sentry's Web API that resolve a provider's issue, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.tracked = Gauge("alertd_tracked_providers", "Providers currently tracked.", registry=registry)
        self.tracked.set_function(lambda: float(tracked()))
        Info("alertd_build", "alertd's version.", registry=registry).info({"version": __version__})
        for outcome in SENTRY_OUTCOMES:
            self.sentry_events.labels(outcome)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        for outcome in SENTRY_API_OUTCOMES:
            self.sentry_api_requests.labels(outcome)

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

    def count(self, recorded: Recorded) -> set[str]:
        """Count what one batch did; returns the providers it evicted and that are not tracked at its end."""
        if recorded.evicted:
            self.forget(recorded.evicted)
            self.evicted.inc(len(recorded.evicted))
        # Providers evicted by this batch and not tracked at its end get no series (the cap bounds them).
        gone = set(recorded.evicted).difference(recorded.admitted)
        for provider in recorded.admitted:
            self.add_provider(provider)
        for provider, count in recorded.failures.items():
            if provider not in gone:
                self.series(provider)[0].inc(count)
        for provider, count in recorded.throttled.items():
            if provider not in gone:
                self.series(provider)[2].inc(count)
        for (provider, reason), count in recorded.ignored.items():
            if provider not in gone:
                self.ignored.labels(provider, reason).inc(count)
        return gone

    def set_firing(self, provider: str, *, firing: bool) -> None:
        """Mark the provider's episode open (1) or resolved (0)."""
        self.firing.labels(provider).set(1.0 if firing else 0.0)

    def count_resolution(self, provider: str) -> None:
        """Count one resolved episode; the firing gauge drops to an explicit 0."""
        self.resolved.labels(provider).inc()
        self.firing.labels(provider).set(0.0)

    def count_sentry_api_request(self, outcome: str) -> None:
        """Count one call to Sentry's Web API by its outcome."""
        self.sentry_api_requests.labels(outcome).inc()

    def forget(self, providers: Iterable[str]) -> None:
        """Remove the series of providers that are no longer tracked."""
        for provider in providers:
            self._series.pop(provider, None)
            for counter in (self.failures, self.alerts, self.throttled, self.silenced, self.resolved, self.firing):
                with contextlib.suppress(KeyError):
                    counter.remove(provider)
            for reason in IGNORE_REASONS:
                with contextlib.suppress(KeyError):
                    self.ignored.remove(provider, reason)


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
