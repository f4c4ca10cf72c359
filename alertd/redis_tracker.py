"""Cluster mode: `FailoverTracker`, the shared tracker in Redis (`RedisTracker`) with fail-open.

`RedisTracker` (redis_shared.py) decides in Redis with `window.lua`. `FailoverTracker` puts it in front of
the in-process `MemoryTracker`: when Redis errs or is slower than ALERTD_REDIS_TIMEOUT_SECONDS, the events
are decided locally (fail open), and a background task reconnects with a capped backoff. It makes one
Redis call at a time for ingest: the batches that arrive meanwhile are decided together by the next call
(group commit). Episodes resolve in Redis once cluster-wide (`resolve_due`), and locally for those the
fallback opened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry
from redis import exceptions as redis_errors
from redis.asyncio import Redis, RedisCluster
from redis.backoff import NoBackoff
from redis.retry import Retry
from structlog.typing import FilteringBoundLogger

from alertd.config import Config
from alertd.event import FailureEvent
from alertd.metrics import BackendMetrics
from alertd.redis_scripts import SCRIPT, SCRIPT_SHA, Decision, Resolved
from alertd.redis_shared import EPISODE_POLL, PROBE_PROVIDER, RedisClient, RedisTracker
from alertd.tracker import MemoryTracker, ProviderStats, Recorded
from alertd.window import Resolution, Rule

__all__ = [
    "EPISODE_POLL",
    "PROBE_PROVIDER",
    "SCRIPT",
    "SCRIPT_SHA",
    "Decision",
    "FailoverTracker",
    "RedisClient",
    "RedisTracker",
    "Resolved",
    "build_failover_tracker",
]

# The reconnect backoff: first retry after this, doubling up to RECONNECT_MAX.
RECONNECT_FIRST = 0.1
RECONNECT_MAX = 5.0


def error_reason(exc: BaseException) -> str:
    """The `reason` label of alertd_backend_errors_total for an error talking to Redis."""
    if isinstance(exc, TimeoutError | redis_errors.TimeoutError):
        return "timeout"
    if isinstance(exc, redis_errors.AuthenticationError | redis_errors.AuthorizationError):
        return "auth"
    if isinstance(exc, redis_errors.NoPermissionError):
        return "auth"
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.RedisClusterException | OSError):
        return "connection"
    if isinstance(exc, redis_errors.ResponseError):
        return "response"
    return "other"


# RedisClusterException ("cannot be connected", SlotNotCoveredError) derives from Exception, not RedisError.
BACKEND_ERRORS = (redis_errors.RedisError, redis_errors.RedisClusterException, OSError, TimeoutError, RuntimeError)


class _Slot:
    """One ingest batch in the queue of a group commit: its events, then its result or the lead."""

    __slots__ = ("done", "events", "lead", "result")

    def __init__(self, events: Sequence[FailureEvent]) -> None:
        self.events = events
        # Done when `result` is ready, or when this batch is handed the lead. An asyncio future, not an
        # anyio.Event: redis.asyncio runs on asyncio only, and the Event's backend lookup cost per batch.
        self.done: asyncio.Future[None] | None = None
        self.lead = False
        self.result: Recorded | None = None

    def wake(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(None)


class FailoverTracker:
    """Redis while it answers within `timeout`; this process's MemoryTracker otherwise (fail open)."""

    def __init__(
        self,
        shared: RedisTracker,
        metrics: BackendMetrics,
        log: FilteringBoundLogger,
        *,
        timeout: float,
        details: Mapping[str, Any],
        backoff: tuple[float, float] = (RECONNECT_FIRST, RECONNECT_MAX),
    ) -> None:
        self.shared = shared
        self.local = shared.local
        self.max_providers = shared.local.max_providers
        self.metrics = metrics
        self.log = log
        self.timeout = timeout
        self.details = dict(details)
        self.backoff = backoff  # (first delay, cap): the delay doubles from the first up to the cap
        self.up = False
        self.last_error: str | None = None
        self._down = anyio.Event()
        self._down.set()  # until the first probe answers
        self._outage_logged = False
        self._decided_in_fallback = False
        self._healing_until: float | None = None
        # Group commit: the batches waiting for the call in flight, and whether a call is in flight.
        self._waiting: list[_Slot] = []
        self._leading = False
        metrics.up.set(0)

    @property
    def mode(self) -> str:
        """`redis` while Redis answers, `redis-fallback` while this process decides alone."""
        return "redis" if self.up else "redis-fallback"

    def status(self) -> dict[str, Any]:
        """The mode and the backend's details for GET /v1/status."""
        return {
            "mode": self.mode,
            "backend": {**self.details, "up": self.up, "last_error": self.last_error},
        }

    def _failed(self, exc: BaseException) -> None:
        reason = error_reason(exc)
        self.metrics.errors.labels(reason).inc()
        self.last_error = reason
        if self.up or not self._outage_logged:
            self.log.warning(
                "backend_down",
                reason=reason,
                error=type(exc).__name__,
                detail="Redis did not answer: deciding alerts in this process until it is back",
            )
            self._outage_logged = True
        if self.up:
            self.up = False
            self.metrics.up.set(0)
            self._down.set()

    def _recovered(self) -> None:
        if self._decided_in_fallback:
            # For one WINDOW the fallback's failures are only in the local windows: decide there too.
            self._healing_until = self.local.clock() + self.local.rule.window
            self._decided_in_fallback = False
        self.up = True
        self.metrics.up.set(1)
        self._down = anyio.Event()
        if self._outage_logged:
            self.log.info("backend_up", detail="Redis answers again: cluster mode")
            self._outage_logged = False

    async def record(self, events: Sequence[FailureEvent]) -> Recorded:
        """Decide in Redis within the timeout; on any failure, decide these events locally.

        Group commit: one call at a time per process. The batches that arrive while a call is in flight
        wait, then the first of them leads: it decides all of them together, in arrival order, in one
        call (one EVALSHA per provider for the whole group), and each batch gets back its own result.
        """
        if not self.up:
            self._decided_in_fallback = True
            return self.local.record_now(events, fallback=True)
        slot = _Slot(events)
        self._waiting.append(slot)
        if self._leading:
            slot.done = asyncio.get_running_loop().create_future()
            try:
                await slot.done
            except BaseException:
                self._abandon(slot)
                raise
            if slot.result is not None:
                return slot.result
        # First in, or handed the lead: decide everything waiting so far, this batch first.
        self._leading = True
        group, self._waiting = self._waiting, []
        decided = None
        try:
            if self.up:
                decided = await self._call(group)
        finally:
            # Also when cancelled mid-call: the group is decided locally, and the lead passes on.
            self._settle(group, decided)
            self._hand_on()
        assert slot.result is not None  # noqa: S101 - _settle gave every batch of the group its result
        return slot.result

    def _abandon(self, slot: _Slot) -> None:
        # A waiting batch was cancelled. Not yet taken into a group: it leaves the queue, undecided (as a
        # cancelled call would be). Handed the lead but not started: the lead goes to the next in line.
        if slot in self._waiting:
            self._waiting.remove(slot)
        if slot.lead and slot.result is None:
            slot.lead = False
            self._hand_on()

    def _hand_on(self) -> None:
        if self._waiting:
            first = self._waiting[0]
            first.lead = True
            first.wake()
        else:
            self._leading = False

    async def _call(self, group: list[_Slot]) -> tuple[dict[str, Decision], dict[str, Rule]] | None:
        counts, rules = self.shared.counts([slot.events for slot in group])
        try:
            with anyio.fail_after(self.timeout):
                return await self.shared.decide(counts, rules=rules), rules
        except BACKEND_ERRORS as exc:
            self._failed(exc)
            return None

    def _settle(self, group: list[_Slot], decided: tuple[dict[str, Decision], dict[str, Rule]] | None) -> None:
        if decided is None:  # Redis failed, or the call was cancelled: each batch decided here, in order
            self._decided_in_fallback = True
            for slot in group:
                slot.result = self.local.record_now(slot.events, fallback=True)
        else:
            decisions, rules = decided
            healing = self._healing_until is not None and self.local.clock() <= self._healing_until
            batches = [slot.events for slot in group]
            results = self.shared.apply_group(batches, decisions, also_local=healing, rules=rules)
            for slot, result in zip(group, results, strict=True):
                slot.result = result
        for slot in group[1:]:  # the first is the leader's own
            slot.wake()

    def set_rules(self, rule_for: Callable[[str], Rule]) -> None:
        """Judge each provider's next failures by `rule_for(provider)`: in Redis and in the local fallback."""
        self.shared.set_rules(rule_for)

    async def resolve_due(self) -> tuple[list[Resolution], float | None]:
        """Resolve the due episodes: this process's own (decided in fallback), and the shared ones in Redis.

        The next look is at most EPISODE_POLL away, even when no episode is known open: a decision reply
        may show one that another process opened, and nothing else wakes the caller (a local timer only:
        Redis is asked only about known episodes whose deadline passed).
        """
        resolutions, next_local = self.local.resolve_due_now()
        next_shared = None
        if self.up:
            try:
                with anyio.fail_after(self.timeout):
                    shared, next_shared = await self.shared.resolve_due()
                resolutions.extend(shared)
            except BACKEND_ERRORS as exc:
                self._failed(exc)
        # Never None: the caller sleeps until the time returned, and nothing else wakes it for an episode
        # another process opened (or for Redis coming back with episodes known).
        return resolutions, min(
            at for at in (next_local, next_shared, self.local.clock() + EPISODE_POLL) if at is not None
        )

    async def stats(self, provider: str) -> ProviderStats | None:
        """Shared figures while Redis answers, else this process's."""
        if self.up:
            try:
                with anyio.fail_after(self.timeout):
                    return await self.shared.stats(provider)
            except BACKEND_ERRORS as exc:
                self._query_failed(exc)
        return self.local.stats_now(provider)

    async def all_stats(self) -> list[ProviderStats]:
        """Shared figures of the providers this process tracks while Redis answers, else this process's."""
        if self.up:
            try:
                with anyio.fail_after(self.timeout):
                    return await self.shared.all_stats()
            except BACKEND_ERRORS as exc:
                self._query_failed(exc)
        return self.local.all_stats_now()

    def _query_failed(self, exc: BaseException) -> None:
        # A slow read (thousands of providers in one GET /v1/providers) is not an outage: counted, answered
        # from this process's figures, and ingest keeps deciding in Redis.
        self.metrics.errors.labels(error_reason(exc)).inc()
        self.last_error = error_reason(exc)

    async def cleanup(self) -> list[str]:
        """Forget this process's idle providers."""
        return self.local.cleanup_now()

    def tracked(self) -> int:
        """How many providers this process tracks."""
        return self.local.tracked()

    async def _probe(self) -> bool:
        try:
            with anyio.fail_after(self.timeout):
                await self.shared.probe()
        except Exception as exc:  # noqa: BLE001 - whatever Redis does, the reconnect task must not end the daemon
            self._failed(exc)
            return False
        self._recovered()
        return True

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect (once, bounded by the timeout), report started, then reconnect after each outage.

        Ready either way: alertd starts and serves while Redis is down. Closes the client when cancelled.
        """
        try:
            await self._probe()
            task_status.started()
            while True:
                await self._down.wait()
                delay, cap = self.backoff
                while not await self._probe_after(delay):
                    delay = min(delay * 2, cap)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                await self.shared.client.aclose()

    async def _probe_after(self, delay: float) -> bool:
        if self.up:
            return True
        await anyio.sleep(delay)
        return await self._probe()


def make_client(config: Config) -> RedisClient:
    """The client for ALERTD_REDIS_URL: no retries of its own (a failed call falls back at once)."""
    if config.redis_url is None:
        raise ValueError("ALERTD_REDIS_URL is not set")
    # No socket_timeout: every call is bounded by FailoverTracker's own timer, once per call; a socket
    # timeout would add one more timer around each reply read (one per EVALSHA of a pipeline).
    options: dict[str, Any] = {
        "socket_timeout": None,
        "socket_connect_timeout": config.redis_timeout_seconds,
        "retry": Retry(NoBackoff(), 0),
    }
    if config.redis_cluster:
        return RedisCluster.from_url(config.redis_url.url, **options)
    return Redis.from_url(config.redis_url.url, **options)


def build_failover_tracker(
    config: Config,
    rule: Rule,
    local: MemoryTracker,
    registry: CollectorRegistry,
    log: FilteringBoundLogger,
    *,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> FailoverTracker:
    """Cluster mode as configured; `run` it in the daemon's task group to connect."""
    assert config.redis_url is not None  # noqa: S101 - the caller checks
    shared = RedisTracker(
        make_client(config),
        rule,
        local,
        prefix=config.redis_prefix,
        clock=clock,
        wall_clock=wall_clock,
        rule_for=local.rule_for,
    )
    details = {
        "kind": "redis-cluster" if config.redis_cluster else "redis",
        "url": config.redis_url.redacted(),
        "prefix": config.redis_prefix,
        "timeout_seconds": config.redis_timeout_seconds,
    }
    return FailoverTracker(shared, BackendMetrics(registry), log, timeout=config.redis_timeout_seconds, details=details)
