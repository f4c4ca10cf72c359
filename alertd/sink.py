"""The alert sink interface: where built alerts go after they are logged and counted."""

from __future__ import annotations

from typing import Protocol

from alertd.alert import Alert


class AlertSink(Protocol):
    """Delivers alerts somewhere. `send` must never block or raise; delivery happens in the background."""

    def send(self, alert: Alert) -> None:
        """Queue one alert for delivery."""
        ...

    def report_exception(self, exc: BaseException) -> None:
        """Queue a report of one of alertd's own unexpected errors."""
        ...

    async def aclose(self, grace: float) -> None:
        """Deliver what is queued, waiting at most `grace` seconds, then stop."""
        ...


class NullSink:
    """The sink when Sentry is off: alerts are only logged and counted."""

    def send(self, alert: Alert) -> None:
        """Drop the alert; it was already logged."""

    def report_exception(self, exc: BaseException) -> None:
        """Drop the report; the error was already logged."""

    async def aclose(self, grace: float) -> None:
        """Nothing to deliver."""


class ResolutionSink(Protocol):
    """Tells the outside world that a provider's episode resolved (Sentry's Web API). Never blocks."""

    def resolve(self, provider: str) -> None:
        """Queue the resolution of the provider's alert issue."""
        ...

    def cancel(self, provider: str) -> None:
        """The provider's next episode opened: drop its pending resolution."""
        ...


class NullResolutionSink:
    """No Sentry Web API configured: resolutions are only logged and counted."""

    def resolve(self, provider: str) -> None:
        """Nothing to resolve elsewhere."""

    def cancel(self, provider: str) -> None:
        """Nothing pending."""
