"""Which alerts never reached Sentry, so that the next alert for the provider can say how many were lost."""

from __future__ import annotations

import threading
from collections import OrderedDict

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
