"""The Sentry sink: the real sentry-sdk client, its HTTP transport counting every delivery outcome.

The SDK's transport sends from its own worker thread with a bounded queue, so `send` never blocks
the event loop; the blocking flush at shutdown runs in a worker thread too.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import anyio
import sentry_sdk
from sentry_sdk.envelope import Envelope, Item
from sentry_sdk.transport import HttpTransport
from sentry_sdk.utils import event_from_exception

from alertd.alert import Alert
from alertd.config import Dsn

if TYPE_CHECKING:
    from sentry_sdk._types import Event

OutcomeHook = Callable[[str, str], None]
QUEUE_SIZE = 100


def _event_ids(items: list[Item]) -> list[str]:
    ids = []
    for item in items:
        if item.type == "event":
            event = item.get_event() or {}
            ids.append(str(event.get("event_id", "")))
    return ids


def make_transport_class(hook: OutcomeHook) -> type[HttpTransport]:
    """An HttpTransport that calls `hook(event_id, outcome)` once for every event it handles."""

    class CountingTransport(HttpTransport):
        def record_lost_event(
            self,
            reason: str,
            data_category: Any = None,
            item: Item | None = None,
            *,
            quantity: int = 1,
        ) -> None:
            super().record_lost_event(reason, data_category, item, quantity=quantity)
            outcome = {"queue_overflow": "queue_overflow", "ratelimit_backoff": "rate_limited"}.get(reason)
            if outcome is not None and item is not None:
                for event_id in _event_ids([item]):
                    hook(event_id, outcome)

        def _send_request(
            self,
            body: bytes,
            headers: dict[str, str],
            endpoint_type: Any,
            envelope: Envelope | None = None,
        ) -> None:
            try:
                super()._send_request(body, headers, endpoint_type, envelope)
            except Exception:
                for event_id in _event_ids(envelope.items if envelope else []):
                    hook(event_id, "network_error")
                raise

        def _handle_response(self, response: Any, envelope: Envelope | None) -> None:
            status = response.status
            outcome = "sent" if 200 <= status < 300 else "rate_limited" if status == 429 else "http_error"
            for event_id in _event_ids(envelope.items if envelope else []):
                hook(event_id, outcome)
            super()._handle_response(response, envelope)

    return CountingTransport


class SentrySink:
    """Sends each alert as one Sentry event, built in a scope of its own."""

    # Every alert sent gets one outcome through `on_outcome` (see make_transport_class).
    reports_outcomes = True

    def __init__(
        self,
        dsn: Dsn,
        *,
        environment: str,
        release: str | None,
        sample_rate: float,
        on_outcome: OutcomeHook,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self._sample_rate = sample_rate
        # Its own generator, so sampling neither reads nor advances the process's global random state.
        self._random = random.Random()  # noqa: S311 - sampling, not security
        self._on_outcome = on_outcome
        self._outcomes: dict[str, str] = {}
        self._watched: set[str] = set()
        self._client = sentry_sdk.Client(
            dsn=dsn.url,
            environment=environment,
            release=release,
            # Alerts are never sampled; errors are sampled in `report_exception`.
            sample_rate=1.0,
            default_integrations=False,
            auto_enabling_integrations=False,
            # Frame locals of alertd's own errors hold raw request bodies (API keys) and headers (the
            # ingest token): never send them.
            include_local_variables=False,
            include_source_context=False,
            transport=make_transport_class(self._record),
            transport_queue_size=queue_size,
            shutdown_timeout=0,
        )

    def _record(self, event_id: str, outcome: str) -> None:
        if event_id in self._watched:
            self._outcomes[event_id] = outcome
        self._on_outcome(event_id, outcome)

    def watch(self, event_id: str) -> None:
        """Remember the outcome of `event_id`, for `outcome`."""
        self._watched.add(event_id)

    def outcome(self, event_id: str) -> str | None:
        """The delivery outcome of a watched event, once known."""
        return self._outcomes.get(event_id)

    def send(self, alert: Alert) -> None:
        """Queue the alert's event; a fresh scope keeps tags from leaking between alerts."""
        self._client.capture_event(cast("Event", alert.to_sentry_event()), scope=sentry_sdk.Scope())

    def report_exception(self, exc: BaseException) -> None:
        """Queue one of alertd's own errors, subject to SENTRY_SAMPLE_RATE."""
        if self._random.random() >= self._sample_rate:
            return
        event, hint = event_from_exception(exc, client_options=self._client.options)
        self._client.capture_event(event, hint, scope=sentry_sdk.Scope())

    async def aclose(self, grace: float) -> None:
        """Flush queued events in a worker thread, at most `grace` seconds, then close the client."""
        await anyio.to_thread.run_sync(self._client.flush, grace)
        self._client.close(timeout=0)
