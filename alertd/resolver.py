"""Resolves a provider's Sentry issue through Sentry's Web API when its firing episode ends.

The call is Sentry's documented "Bulk Mutate an Organization's Issues":
`PUT {api_url}/api/0/organizations/{org}/issues/?project={id}&query=...` with `{"status": "resolved"}`.
`resolve` only records the wish; the requests run in `run`'s own tasks, so ingest and alerts never
wait for Sentry. At most one resolution is pending per provider, and at most `max_pending` in all.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import anyio
from anyio.abc import TaskGroup, TaskStatus
from structlog.typing import FilteringBoundLogger

from alertd.alert import KIND, KIND_TAG
from alertd.sentry_config import SentryApi

# One outcome per call, for alertd_sentry_api_requests_total{outcome}:
RESOLVED = "resolved"  # 2xx other than 204: Sentry resolved the provider's unresolved issue
NOTHING_MATCHED = "nothing_matched"  # 204: no unresolved issue matched (already resolved, or never sent)
RETRYABLE_ERROR = "retryable_error"  # 5xx or 429: retried
TIMEOUT = "timeout"  # no complete answer within the timeout: retried
CONNECTION_ERROR = "connection_error"  # refused, reset, DNS or TLS failure: retried
REJECTED = "rejected"  # any other status (400, 401, 403, 404, 3xx): logged as an error, not retried
OUTCOMES = (RESOLVED, NOTHING_MATCHED, RETRYABLE_ERROR, TIMEOUT, CONNECTION_ERROR, REJECTED)
RETRIED = frozenset({RETRYABLE_ERROR, TIMEOUT, CONNECTION_ERROR})

# Requests in flight at once: a slow Sentry holds a few sockets, never one per provider.
CONCURRENCY = 4
# Characters of an error answer's body kept in the log line.
DETAIL_CHARS = 200


@dataclass(frozen=True, slots=True)
class ResolveRequest:
    """One HTTP request, fully described: what `IssueResolver` sends, and what tests check."""

    method: str
    url: str
    params: tuple[tuple[str, str], ...]
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def __repr__(self) -> str:
        # The headers carry the token: never print them.
        return f"ResolveRequest({self.method} {self.url} params={self.params!r})"


def search_quote(value: str) -> str:
    """`value` as a quoted value of Sentry's issue search: backslashes, quotes and `*` (a wildcard) escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("*", "\\*")
    return f'"{escaped}"'


def resolve_query(provider: str) -> str:
    """The issue search that selects exactly this provider's unresolved alert issue."""
    return f"is:unresolved {KIND_TAG}:{KIND} provider:{search_quote(provider)}"


def build_resolve_request(api: SentryApi, provider: str) -> ResolveRequest:
    """The bulk mutation that resolves `provider`'s issue in the DSN's project; pure."""
    return ResolveRequest(
        method="PUT",
        url=f"{api.api_url}/api/0/organizations/{api.org}/issues/",
        params=(("project", str(api.project_id)), ("query", resolve_query(provider))),
        headers=(("Authorization", f"Bearer {api.token}"), ("Content-Type", "application/json")),
        body=json.dumps({"status": "resolved"}).encode(),
    )


def classify(status: int) -> str:
    """The outcome of an answer with this HTTP status."""
    if status == 204:
        return NOTHING_MATCHED
    if 200 <= status < 300:
        return RESOLVED
    if status == 429 or status >= 500:
        return RETRYABLE_ERROR
    return REJECTED


def _retry_after(value: str | None) -> float:
    try:
        seconds = float(value) if value is not None else 0.0
    except ValueError:
        return 0.0
    return seconds if math.isfinite(seconds) and seconds > 0 else 0.0


class _Pending:
    """One provider's pending resolution; `cancelled` once the provider's next episode opened."""

    __slots__ = ("attempts", "cancelled", "provider", "waiting")

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.cancelled = False
        self.attempts = 0
        # The scope of a wait (for a free slot, or a backoff): `cancel` ends it at once.
        self.waiting: anyio.CancelScope | None = None


class IssueResolver:
    """Resolves providers' Sentry issues in the background, retrying failures with capped backoff."""

    def __init__(
        self,
        settings: SentryApi,
        *,
        on_outcome: Callable[[str], None],
        log: FilteringBoundLogger,
        initial_backoff: float = 1.0,
        max_backoff: float = 10.0,
        timeout: float = 10.0,
        max_pending: int = 10_000,
    ) -> None:
        self._settings = settings
        self._on_outcome = on_outcome
        self._log = log
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._timeout = timeout
        self._max_pending = max_pending
        self._pending: dict[str, _Pending] = {}
        # Set while `run` runs: its task group and HTTP session.
        self._running: tuple[TaskGroup, aiohttp.ClientSession] | None = None
        self._slots = anyio.CapacityLimiter(CONCURRENCY)

    def pending(self) -> int:
        """Resolutions not yet done (in flight, waiting, or backing off)."""
        return len(self._pending)

    def resolve(self, provider: str) -> None:
        """Queue the resolution of `provider`'s issue; returns at once. A pending one is kept, not doubled."""
        if provider in self._pending:
            return
        if len(self._pending) >= self._max_pending:
            self._log.warning("sentry_resolve_dropped", provider=provider, pending=len(self._pending))
            return
        entry = _Pending(provider)
        self._pending[provider] = entry
        if self._running is not None:
            tasks, session = self._running
            tasks.start_soon(self._work, entry, session)

    def cancel(self, provider: str) -> None:
        """The provider's next episode opened: no retry for its pending resolution.

        A resolution not yet tried is still tried once: the episode that ended must be resolved in Sentry,
        or the next episode's first event would land in an unresolved issue and notify nobody. A request
        already in flight finishes (and is counted); a backoff ends at once.
        """
        entry = self._pending.get(provider)
        if entry is None:
            return
        entry.cancelled = True
        if entry.attempts == 0:
            return
        del self._pending[provider]
        if entry.waiting is not None:
            entry.waiting.cancel()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Work through pending resolutions until cancelled; owns the HTTP session."""
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        session = aiohttp.ClientSession(timeout=timeout, connector=connector, raise_for_status=False)
        try:
            async with anyio.create_task_group() as tasks:
                self._running = tasks, session
                for entry in list(self._pending.values()):
                    tasks.start_soon(self._work, entry, session)
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._running = None
            with anyio.CancelScope(shield=True):
                await session.close()

    async def _work(self, entry: _Pending, session: aiohttp.ClientSession) -> None:
        backoff = self._initial_backoff
        attempt = 0
        try:
            while not (entry.cancelled and entry.attempts):
                acquired = False
                with anyio.CancelScope() as entry.waiting:
                    await self._slots.acquire()
                    acquired = True
                entry.waiting = None
                if not acquired:
                    return
                try:
                    if entry.cancelled and entry.attempts:
                        return
                    attempt += 1
                    entry.attempts = attempt
                    outcome, retry_after = await self._attempt(session, entry.provider, attempt)
                finally:
                    self._slots.release()
                if outcome not in RETRIED or entry.cancelled:
                    return
                delay = max(backoff, min(retry_after, self._max_backoff))
                with anyio.CancelScope() as entry.waiting:
                    await anyio.sleep(delay)
                entry.waiting = None
                backoff = min(backoff * 2, self._max_backoff)
        finally:
            if self._pending.get(entry.provider) is entry:
                del self._pending[entry.provider]

    async def _attempt(self, session: aiohttp.ClientSession, provider: str, attempt: int) -> tuple[str, float]:
        """One call; its outcome (counted and logged here) and the Retry-After it asked for."""
        request = build_resolve_request(self._settings, provider)
        status: int | None = None
        retry_after = 0.0
        detail = ""
        try:
            async with session.request(
                request.method,
                request.url,
                params=request.params,
                headers=request.headers,
                data=request.body,
                allow_redirects=False,
            ) as response:
                status = response.status
                outcome = classify(status)
                if outcome in (REJECTED, RETRYABLE_ERROR):
                    retry_after = _retry_after(response.headers.get("Retry-After"))
                    detail = (await response.content.read(DETAIL_CHARS)).decode("utf-8", "replace")
        except TimeoutError:
            outcome = TIMEOUT
        except aiohttp.ClientError as exc:
            outcome, detail = CONNECTION_ERROR, type(exc).__name__
        self._on_outcome(outcome)
        self._report(provider, outcome, status, detail.replace(self._settings.token, "<redacted>"), attempt)
        return outcome, retry_after

    def _report(self, provider: str, outcome: str, status: int | None, detail: str, attempt: int) -> None:
        if outcome in (RESOLVED, NOTHING_MATCHED):
            self._log.info("sentry_issue_resolved", provider=provider, outcome=outcome, status=status, attempts=attempt)
        elif outcome == REJECTED:
            self._log.error(
                "sentry_resolve_rejected",
                provider=provider,
                status=status,
                detail=detail,
                hint="not retried: check SENTRY_AUTH_TOKEN (scope event:write), SENTRY_ORG and SENTRY_API_URL",
            )
        else:
            # The first failure of a resolution is a warning; its retries (every 10 s at most) are debug.
            report = self._log.warning if attempt == 1 else self._log.debug
            report(
                "sentry_resolve_failed",
                provider=provider,
                outcome=outcome,
                status=status,
                detail=detail,
                attempt=attempt,
            )
