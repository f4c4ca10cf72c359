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
