"""Cluster mode: one window and one cooldown per provider, shared in Redis by every alertd process.

`RedisTracker` sends, per ingest batch, one EVALSHA of `window.lua` for all its providers (on Redis Cluster,
one per provider, in one pipeline): the script applies the rule of `window.py` atomically, on Redis's clock.
`FailoverTracker` puts it in front of the in-process `MemoryTracker`: when Redis errs or is slower than
ALERTD_REDIS_TIMEOUT_SECONDS, the events are decided locally (fail open), and a background task reconnects
with a capped backoff. It makes one Redis call at a time: the batches that arrive meanwhile are decided
together by the next call (group commit).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
from alertd.tracker import RECENT_SAMPLES, MemoryTracker, ProviderStats, Recorded, Trigger
from alertd.window import ProviderWindow, Rule

SCRIPT = importlib.resources.files("alertd").joinpath("window.lua").read_text(encoding="utf-8")
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()
# The pseudo-provider the reconnect probe runs the script for (with no failures): no real provider has a
# space in its name, so its keys cannot collide with one's.
PROBE_PROVIDER = " probe"
# The reconnect backoff: first retry after this, doubling up to RECONNECT_MAX.
RECONNECT_FIRST = 0.1
RECONNECT_MAX = 5.0

RedisClient = Redis | RedisCluster


@dataclass(frozen=True, slots=True)
class Decision:
    """What the script decided for one provider's failures in one call; times are Redis epoch seconds."""

    now: float
    throttled: int
    # (0-based index of the alerting failure in the batch, count in window, first failure, throttled since)
    alerts: tuple[tuple[int, int, float, int], ...]

    @classmethod
    def parse(cls, reply: Sequence[Any]) -> Decision:
        """Read the script's flat reply."""
        groups = reply[2:]
        alerts = tuple(
            (int(groups[i]) - 1, int(groups[i + 1]), float(groups[i + 2]), int(groups[i + 3]))
            for i in range(0, len(groups), 4)
        )
        return cls(float(reply[0]), int(reply[1]), alerts)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisTracker:
    """The shared window: decisions by the script in Redis; this process's own figures in `local`."""

    def __init__(
        self,
        client: RedisClient,
        rule: Rule,
        local: MemoryTracker,
        *,
        prefix: str = "alertd:",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.rule = rule
        self.local = local
        self.prefix = prefix
        self.clock = clock
        self.wall_clock = wall_clock

    def keys(self, provider: str) -> list[str]:
        """The provider's keys: recent stamps, buckets, state; one hash tag, so one slot."""
        tag = "{" + self.prefix + provider + "}"
        return [f"{tag}:r", f"{tag}:b", f"{tag}:s"]

    async def load(self) -> None:
        """Load the script (on every primary of a cluster, which must also say its state is ok)."""
        if isinstance(self.client, RedisCluster):
            # A restarted node answers SCRIPT LOAD before it serves its slots again (CLUSTERDOWN).
            infos: Any = await self.client.cluster_info(target_nodes=RedisCluster.PRIMARIES)
            for info in [infos] if "cluster_state" in infos else infos.values():
                if info.get("cluster_state") != "ok":
                    raise redis_errors.ClusterDownError("a node reports cluster_state other than ok")
        sha = await self.client.script_load(SCRIPT)
        if isinstance(sha, dict):  # RedisCluster answers per node
            sha = next(iter(sha.values()), SCRIPT_SHA)
        if _text(sha) != SCRIPT_SHA:
            raise RuntimeError("Redis hashed window.lua differently")

    async def probe(self) -> None:
        """Load the script, then run it for zero failures (the reconnect probe).

        A Redis that refuses a command the script needs (ACL, OOM, a slot not served) fails here, not on the
        next real call: an outage is not declared over too early, and its log lines do not flap.
        """
        await self.load()
        await self.decide({PROBE_PROVIDER: 0})

    async def decide(self, counts: Mapping[str, int], now: float | None = None) -> dict[str, Decision]:
        """Run the script for each provider's `count` failures, in one round trip.

        On one Redis, one EVALSHA for every provider; on a Redis Cluster, one per provider (a call's keys
        must share a slot), in one pipeline. `now` (epoch seconds) replaces Redis TIME; only tests pass it.
        """
        rule = self.rule
        providers = list(counts)
        if not providers:
            return {}
        stamp = "" if now is None else repr(now)
        head: tuple[str | int, ...] = (rule.threshold, repr(rule.window), repr(rule.cooldown), stamp)
        # On a Redis Cluster, a call's keys must share a slot: one call per provider (each its own hash tag).
        calls = [[provider] for provider in providers] if isinstance(self.client, RedisCluster) else [providers]
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            commands = []
            for i in todo:
                keys = [key for provider in calls[i] for key in self.keys(provider)]
                counted = (counts[provider] for provider in calls[i])
                commands.append(("EVALSHA", SCRIPT_SHA, len(keys), *keys, *head, *counted))
            results = await self._pipeline(commands)
            missing = []
            for i, result in zip(todo, results, strict=True):
                if isinstance(result, redis_errors.NoScriptError) and attempt == 0:
                    missing.append(i)  # not run: retry only these once the script is loaded
                elif isinstance(result, Exception):
                    raise result
                else:
                    replies[i] = result
            if not missing:
                break
            await self.load()
            todo = missing
        return {
            provider: Decision.parse(reply)
            for call, per_call in zip(calls, replies, strict=True)
            for provider, reply in zip(call, per_call, strict=True)
        }

    async def _pipeline(self, commands: list[tuple[str | int, ...]]) -> list[Any]:
        """Send `commands` in one write, then read every reply (an error reply is returned, not raised).

        On one Redis, straight on a pooled connection: redis-py's Pipeline costs more per call than the
        call itself (its command stack, reset, per-call observability). A Redis Cluster client routes each
        command by its keys, so it takes the cluster pipeline.
        """
        client = self.client
        if isinstance(client, RedisCluster):
            pipe = client.pipeline(transaction=False)
            for command in commands:
                # execute_command: RedisCluster refuses pipe.evalsha(), yet routes EVALSHA by its keys.
                pipe.execute_command(*command)
            return await pipe.execute(raise_on_error=False)
        pool = client.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.send_packed_command(connection.pack_commands(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except redis_errors.ResponseError as exc:  # an error reply: read on, the connection stays in step
                    replies.append(exc)
        except BaseException:
            # redis-py has disconnected it (an error or a cancellation mid-call): back to the pool, where the
            # next call reconnects; shielded, so that a cancelled call cannot leak it.
            with anyio.CancelScope(shield=True):
                await pool.release(connection)
            raise
        await pool.release(connection)
        return replies

    def apply(
        self, events: Sequence[FailureEvent], decisions: Mapping[str, Decision], *, also_local: bool = False
    ) -> Recorded:
        """Record `events` in this process's figures and turn the script's decisions into triggers.

        With `also_local`, this process's tracker decides too, and its alerts (tagged fallback) are added
        for the providers Redis did not alert in this batch: after an outage, the failures decided in
        fallback are only in the local windows.
        """
        return self.apply_group([events], decisions, also_local=also_local)[0]

    def apply_group(
        self,
        batches: Sequence[Sequence[FailureEvent]],
        decisions: Mapping[str, Decision],
        *,
        also_local: bool = False,
    ) -> list[Recorded]:
        """`apply` for batches decided together by one call: one `Recorded` per batch, as if each were alone.

        The script saw each provider's failures of all the batches as one run, in batch order: an alert's
        index falls in exactly one batch, and goes back to it. Each batch is recorded in this process's
        figures on its own, in order (so its counters, evictions and `also_local` decisions are what it
        would have had alone). A provider's throttled hits of the group go to the last batch holding it.
        """
        local = self.local
        offset = self.wall_clock() - self.clock()  # Redis epoch stamps to this process's monotonic seconds
        local_now = self.clock()
        last_batch: dict[str, int] = {}  # per provider: the last batch that holds it
        for position, events in enumerate(batches):
            for event in events:
                last_batch[event.provider] = position
        done: dict[str, int] = {}  # per provider: its failures in the batches before this one
        results = []
        for position, events in enumerate(batches):
            by_provider: dict[str, list[FailureEvent]] = {}
            for event in events:
                by_provider.setdefault(event.provider, []).append(event)
            # The provider's recent samples before this batch, only where an alert of this batch shows them.
            before: dict[str, tuple[tuple[float, FailureEvent], ...]] = {}
            for provider, batch in by_provider.items():
                start = done.get(provider, 0)
                if any(start <= alert[0] < start + len(batch) for alert in decisions[provider].alerts):
                    before[provider] = local.samples(provider)
            result = local.record_now(events, decide=also_local, fallback=True)
            local_triggers, result.triggers = result.triggers, []
            result.throttled.clear()  # the shared decision counts throttled hits, not this process's
            for provider, batch in by_provider.items():
                decision = decisions[provider]
                start = done.get(provider, 0)
                done[provider] = start + len(batch)
                if decision.throttled and last_batch[provider] == position:
                    result.throttled[provider] += decision.throttled
                for index, count, first_at, throttled_since in decision.alerts:
                    mine = index - start
                    if not 0 <= mine < len(batch):
                        continue
                    seen = [*before[provider], *((local_now, e) for e in batch[: mine + 1])]
                    result.triggers.append(
                        Trigger(
                            provider=provider,
                            event=batch[mine],
                            at=decision.now - offset,
                            count=count,
                            first_at=first_at - offset,
                            throttled_since_last=throttled_since,
                            recent=tuple(seen[-RECENT_SAMPLES:]),
                            rule=self.rule,
                        )
                    )
            alerted = {trigger.provider for trigger in result.triggers}
            result.triggers.extend(t for t in local_triggers if t.provider not in alerted)
            results.append(result)
        return results

    async def record(self, events: Sequence[FailureEvent]) -> Recorded:
        """Weigh every event in its provider's shared window, in order, at Redis's current time."""
        counts: dict[str, int] = {}
        for event in events:
            counts[event.provider] = counts.get(event.provider, 0) + 1
        return self.apply(events, await self.decide(counts))

    async def stats_many(self, providers: Sequence[str]) -> list[ProviderStats]:
        """The shared figures of `providers` (those with state in Redis), in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for provider in providers:
            recent_key, buckets_key, state_key = self.keys(provider)
            pipe.lrange(recent_key, 0, -1)
            pipe.lrange(buckets_key, 0, -1)
            pipe.hgetall(state_key)
        if isinstance(self.client, RedisCluster):  # its pipeline refuses keyless commands: ask one node apart
            replies = await pipe.execute()
            answer: Any = await self.client.time()
            if isinstance(answer, dict):  # one answer per node asked
                answer = next(iter(answer.values()))
            replies.append(answer)
        else:
            pipe.time()
            replies = await pipe.execute()
        seconds, micros = replies[-1]
        now = int(seconds) + int(micros) / 1_000_000
        offset = self.wall_clock() - self.clock()
        found = []
        for i, provider in enumerate(providers):
            recent, buckets, state = replies[3 * i : 3 * i + 3]
            if not recent:
                continue
            fields = {_text(k): _text(v) for k, v in state.items()}
            last_alert = float(fields["la"]) if "la" in fields else None
            window = ProviderWindow.restore(
                self.rule,
                [float(t) for t in recent],
                [[float(x) for x in _text(b).split("|")] for b in buckets],
                last_alert=last_alert,
                totals=(int(fields.get("ft", 0)), int(fields.get("at", 0)), int(fields.get("tt", 0))),
            )
            found.append(ProviderStats.of(provider, window, now, offset))
        return found

    async def stats(self, provider: str) -> ProviderStats | None:
        """One provider's shared figures, or None if Redis holds nothing for it."""
        found = await self.stats_many([provider])
        return found[0] if found else None

    async def all_stats(self) -> list[ProviderStats]:
        """The shared figures of every provider this process tracks, sorted by provider."""
        return await self.stats_many(self.local.providers())

    async def cleanup(self) -> list[str]:
        """Forget this process's idle providers (Redis keys expire by themselves)."""
        return self.local.cleanup_now()

    def tracked(self) -> int:
        """How many providers this process tracks."""
        return self.local.tracked()

    def status(self) -> dict[str, Any]:
        """The mode, without failover (FailoverTracker reports the fallback)."""
        return {"mode": "redis"}


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
        decisions = None
        try:
            if self.up:
                decisions = await self._call(group)
        finally:
            # Also when cancelled mid-call: the group is decided locally, and the lead passes on.
            self._settle(group, decisions)
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

    async def _call(self, group: list[_Slot]) -> dict[str, Decision] | None:
        counts: dict[str, int] = {}
        for slot in group:
            for event in slot.events:
                counts[event.provider] = counts.get(event.provider, 0) + 1
        try:
            with anyio.fail_after(self.timeout):
                return await self.shared.decide(counts)
        except BACKEND_ERRORS as exc:
            self._failed(exc)
            return None

    def _settle(self, group: list[_Slot], decisions: dict[str, Decision] | None) -> None:
        if decisions is None:  # Redis failed, or the call was cancelled: each batch decided here, in order
            self._decided_in_fallback = True
            for slot in group:
                slot.result = self.local.record_now(slot.events, fallback=True)
        else:
            healing = self._healing_until is not None and self.local.clock() <= self._healing_until
            results = self.shared.apply_group([slot.events for slot in group], decisions, also_local=healing)
            for slot, result in zip(group, results, strict=True):
                slot.result = result
        for slot in group[1:]:  # the first is the leader's own
            slot.wake()

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
        make_client(config), rule, local, prefix=config.redis_prefix, clock=clock, wall_clock=wall_clock
    )
    details = {
        "kind": "redis-cluster" if config.redis_cluster else "redis",
        "url": config.redis_url.redacted(),
        "prefix": config.redis_prefix,
        "timeout_seconds": config.redis_timeout_seconds,
    }
    return FailoverTracker(shared, BackendMetrics(registry), log, timeout=config.redis_timeout_seconds, details=details)
