"""Cluster mode's API silences: one Redis hash shared by every alertd process, so a silence holds for every pod.

`RedisSilences` is the `SilenceBackend` of cluster mode. The silences live in one hash, `{PREFIX}silences`
(id → the JSON of `Silence.to_state()`, plus a `version` counter): one key, hence one slot on a Redis Cluster.
A change reads the hash, applies `SilenceStore`'s own rules to it (the active limit, the hour during which
ended silences stay listed, the bounds), and writes back only what changed through a small Lua script that
applies it only if `version` has not moved since the read (optimistic concurrency, retried on a conflict):
two pods adding at once cannot exceed the limit together, and the semantics are SilenceStore's by
construction.

Every call is bounded by ALERTD_REDIS_TIMEOUT_SECONDS. Fail open: `covering` (the alert path) answers from
the last copy read successfully, refreshed at most every `refresh_seconds`; when Redis does not answer, a
silence read before keeps holding, and with no copy at all nothing is silenced (an alert is never lost
because Redis is down). `add`, `expire` and `listing` raise BackendUnavailableError instead (the API's 503).

Imports redis-py: load it only in cluster mode (docs/BENCHMARKS.md: ~10 MiB of RSS).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import anyio
from redis import exceptions as redis_errors
from redis.asyncio import Redis, RedisCluster
from structlog.typing import FilteringBoundLogger

from alertd.errors import BackendUnavailableError
from alertd.redis_scripts import reply_text
from alertd.redis_tracker import error_reason
from alertd.silences import MAX_ACTIVE, Silence, SilenceStore

# The hash's field counting its changes; never a silence id (those are 32 hex digits).
VERSION_FIELD = "version"
# A change that meets a concurrent one is read and applied again, this many times at most (all within the
# timeout).
MAX_ATTEMPTS = 8
# `covering` reads Redis again at most this often; between reads it answers from its copy.
REFRESH_SECONDS = 1.0

# KEYS[1] the hash. ARGV[1] the version read ('' when there was none), ARGV[2] how many ids to delete, then
# those ids, then id/JSON pairs to set. Applies them and counts a version only if nobody wrote in between.
CAS_SCRIPT = """
local seen = redis.call('HGET', KEYS[1], 'version')
if (seen or '') ~= ARGV[1] then
  return 0
end
local deletions = tonumber(ARGV[2])
for i = 3, 2 + deletions do
  redis.call('HDEL', KEYS[1], ARGV[i])
end
for i = 3 + deletions, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HINCRBY', KEYS[1], 'version', 1)
return 1
"""
CAS_SHA = hashlib.sha1(CAS_SCRIPT.encode(), usedforsecurity=False).hexdigest()

# RedisClusterException ("cannot be connected", SlotNotCoveredError) derives from Exception, not RedisError.
_BACKEND_ERRORS = (redis_errors.RedisError, redis_errors.RedisClusterException, OSError, TimeoutError)

T = TypeVar("T")


def encode(silence: Silence) -> str:
    """The hash value of a silence: the JSON of its state (times as exact epoch seconds)."""
    return json.dumps(silence.to_state(), separators=(",", ":"), allow_nan=False)


def decode(stored: Mapping[Any, Any]) -> tuple[str, dict[str, Silence], list[str]]:
    """The version, the silences and the fields that do not read back as a silence, of an HGETALL reply."""
    version = ""
    silences: dict[str, Silence] = {}
    damaged: list[str] = []
    for raw_field, raw_value in stored.items():
        field = reply_text(raw_field)
        value = reply_text(raw_value)
        if field == VERSION_FIELD:
            version = value
            continue
        try:
            silence = Silence.from_json(json.loads(value))
        except (ValueError, TypeError, RecursionError):
            damaged.append(field)  # not ours, or damaged: dropped from the hash by the next change
            continue
        if silence.id == field:
            silences[field] = silence
        else:
            damaged.append(field)
    return version, silences, damaged


class RedisSilences:
    """API silences shared in Redis by every alertd process with the same URL and prefix (cluster mode).

    `client` is the redis-py client cluster mode already uses (`FailoverTracker.shared.client`): the same
    connection pool; this class never closes it. `backend_up`, when given, says whether cluster mode
    currently reaches Redis: while it is False, `covering` answers from its copy without trying Redis, so
    an alert is not delayed by a second timeout during an outage.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        prefix: str = "alertd:",
        timeout: float = 0.25,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        max_active: int = MAX_ACTIVE,
        refresh_seconds: float = REFRESH_SECONDS,
        backend_up: Callable[[], bool] | None = None,
        log: FilteringBoundLogger | None = None,
    ) -> None:
        self.client = client
        # Starts with `{` and the prefix like every alertd key (the documented ACL's `~{alertd:*`); the
        # empty hash tag `{alertd:}` is no provider's (a provider name is never empty).
        self.key = "{" + prefix + "}silences"
        self.timeout = timeout
        self.max_active = max_active
        self.refresh_seconds = refresh_seconds
        self._wall_clock = wall_clock
        self._clock = clock
        self._new_id = new_id
        self._backend_up = backend_up
        self._log = log
        # The last copy read (or written) successfully, its version (None: never read), and when a refresh
        # was last tried.
        self._copy = SilenceStore(new_id, max_active)
        self._version: str | None = None
        self._tried_at = -math.inf
        self._refreshing = anyio.Lock()
        self._read_failing = False

    async def add(self, providers: str, ends_at: float, comment: str, created_by: str | None) -> Silence:
        """Create a silence from now to `ends_at`, for every pod.

        Raises SilenceLimitError when too many are active cluster-wide, BackendUnavailableError when Redis
        does not answer within the timeout (the silence may then exist all the same: list to see).
        """
        return await self._change(lambda store, now: store.add(providers, ends_at, comment, created_by, now))

    async def expire(self, silence_id: str) -> bool:
        """End a silence now, for every pod; False when the id is unknown (or it ended over an hour ago).

        Raises BackendUnavailableError when Redis does not answer within the timeout.
        """
        return await self._change(lambda store, now: store.expire(silence_id, now))

    async def listing(self) -> list[Silence]:
        """The active silences and those that ended in the last hour, oldest first, as Redis holds them.

        Raises BackendUnavailableError when Redis does not answer within the timeout.
        """
        try:
            with anyio.fail_after(self.timeout):
                version, silences, _ = await self._read()
        except _BACKEND_ERRORS as exc:
            raise self._unavailable(exc) from exc
        store = self._remember(version, silences.values())
        return store.listing(self._wall_clock())

    async def covering(self, provider: str) -> Silence | None:
        """The active silence covering `provider` (the one ending last), if any.

        Never raises, never waits more than the timeout: answers from the copy last read, refreshed first
        when it is older than `refresh_seconds` and Redis is reachable.
        """
        if self._due():
            await self._refresh()
        return self._copy.covering(provider, self._wall_clock())

    def _due(self) -> bool:
        if self._clock() - self._tried_at < self.refresh_seconds:
            return False
        return self._backend_up is None or self._backend_up()

    async def _refresh(self) -> None:
        async with self._refreshing:
            if not self._due():  # another caller refreshed (or tried) while this one waited
                return
            self._tried_at = self._clock()
            try:
                with anyio.fail_after(self.timeout):
                    # Most of the time nothing changed: one small HGET instead of the whole hash.
                    seen = await self.client.hget(self.key, VERSION_FIELD)
                    unchanged = self._version is not None and reply_text(seen or "") == self._version
                    fresh = None if unchanged else await self._read()
            except Exception as exc:  # noqa: BLE001 - the alert path must go on, from the last copy
                if not self._read_failing and self._log is not None:
                    self._log.warning(
                        "silences_unreadable",
                        reason=error_reason(exc),
                        error=type(exc).__name__,
                        detail="Redis did not answer: API silences hold as last read until it does",
                    )
                self._read_failing = True
                return
            if fresh is None:
                self._remember(self._version, None)
            else:
                self._remember(fresh[0], fresh[1].values())

    def _remember(self, version: str | None, silences: Iterable[Silence] | None) -> SilenceStore:
        """Keep what was just read (or written) as the copy `covering` answers from; None: the copy is current."""
        if silences is None:
            store = self._copy
        else:
            store = SilenceStore(self._new_id, self.max_active)
            store.restore(list(silences))
            self._copy = store
        self._version = version
        self._tried_at = self._clock()
        if self._read_failing and self._log is not None:
            self._log.info("silences_readable", detail="Redis answers again: API silences are read from it")
        self._read_failing = False
        return store

    async def _read(self) -> tuple[str, dict[str, Silence], list[str]]:
        stored: Mapping[Any, Any] = await self.client.hgetall(self.key)
        return decode(stored)

    async def _change(self, change: Callable[[SilenceStore, float], T]) -> T:
        """Apply `change` to the silences as Redis holds them, and write back what it changed, atomically."""
        try:
            with anyio.fail_after(self.timeout):
                for _ in range(MAX_ATTEMPTS):
                    version, before, damaged = await self._read()
                    store = SilenceStore(self._new_id, self.max_active)
                    store.restore(list(before.values()))
                    result = change(store, self._wall_clock())  # SilenceLimitError goes to the caller
                    after = {s.id: s for s in (Silence(**state) for state in store.snapshot())}
                    deleted = [silence_id for silence_id in before if silence_id not in after] + damaged
                    changed = {i: encode(s) for i, s in after.items() if before.get(i) != s}
                    if not deleted and not changed:
                        self._remember(version, after.values())
                        return result
                    if await self._write(version, deleted, changed):
                        self._remember(str(int(version or "0") + 1), after.values())  # the script's HINCRBY
                        return result
        except _BACKEND_ERRORS as exc:
            raise self._unavailable(exc) from exc
        raise BackendUnavailableError(
            "conflict", f"the silences in Redis kept changing under this call ({MAX_ATTEMPTS} attempts); retry"
        )

    async def _write(self, version: str, deleted: list[str], changed: dict[str, str]) -> bool:
        """Apply the change if the hash's version is still `version`; False when someone wrote in between."""
        args: list[str | int] = [version, len(deleted), *deleted]
        for silence_id, value in changed.items():
            args += [silence_id, value]
        try:
            reply = await self.client.evalsha(CAS_SHA, 1, self.key, *args)
        except redis_errors.NoScriptError:
            await self.client.script_load(CAS_SCRIPT)
            reply = await self.client.evalsha(CAS_SHA, 1, self.key, *args)
        return int(reply) == 1

    def _unavailable(self, exc: BaseException) -> BackendUnavailableError:
        reason = error_reason(exc)
        if reason == "timeout":
            detail = f"Redis did not answer within ALERTD_REDIS_TIMEOUT_SECONDS ({self.timeout:g}s)"
        else:
            detail = f"Redis refused or could not be reached ({reason}: {type(exc).__name__})"
        return BackendUnavailableError(reason, f"{detail}: silences cannot be changed or listed now; retry")
