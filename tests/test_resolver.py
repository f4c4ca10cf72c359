"""IssueResolver against the loopback Sentry Web API over real sockets: outcomes, retries, cancel, secrecy."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from alertd.logs import make_logger
from alertd.resolver import (
    CONNECTION_ERROR,
    NOTHING_MATCHED,
    OUTCOMES,
    REJECTED,
    RESOLVED,
    RETRYABLE_ERROR,
    TIMEOUT,
    IssueResolver,
    build_resolve_request,
    resolve_query,
)
from alertd.sentry_config import SentryApi
from tests.support.sentry_api import TOKEN, LoopbackSentryApi

pytestmark = pytest.mark.anyio

FAST = {"initial_backoff": 0.01, "max_backoff": 0.04, "timeout": 5.0}


class Outcomes(list[str]):
    """The outcomes counted through `on_outcome`; a waiter wakes at each one."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = anyio.Event()

    def record(self, outcome: str) -> None:
        self.append(outcome)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_until(self, check: Callable[[], bool], within: float = 10.0) -> None:
        """Wait, outcome after outcome, until `check()` holds."""
        with anyio.fail_after(within):
            while not check():
                await self._changed.wait()


@dataclass
class Running:
    """A running resolver, the outcomes it counted and its log."""

    resolver: IssueResolver
    outcomes: Outcomes
    log: io.StringIO

    async def settled(self) -> None:
        """Wait until nothing is pending (a resolution leaves right after its last outcome)."""
        await self.outcomes.wait_until(lambda: self.resolver.pending() == 0)

    def log_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.getvalue().splitlines()]


def make_resolver(settings: SentryApi, **options: float) -> Running:
    stream = io.StringIO()
    outcomes = Outcomes()
    log = make_logger("debug", stream=stream)  # no secrets given: the resolver itself must keep the token out
    max_pending = int(options.pop("max_pending", 10_000))
    resolver = IssueResolver(
        settings, on_outcome=outcomes.record, log=log, max_pending=max_pending, **{**FAST, **options}
    )
    return Running(resolver, outcomes, stream)


@asynccontextmanager
async def running(settings: SentryApi, **options: float) -> AsyncIterator[Running]:
    run = make_resolver(settings, **options)
    async with anyio.create_task_group() as tasks:
        await tasks.start(run.resolver.run)
        yield run
        tasks.cancel_scope.cancel()


def settings_for(api_url: str, token: str = TOKEN) -> SentryApi:
    return SentryApi(api_url=api_url, org="acme", project_id=42, token=token)


def test_the_request_is_sentrys_bulk_mutation() -> None:
    request = build_resolve_request(settings_for("https://sentry.io"), "openai")
    assert request.method == "PUT"
    assert request.url == "https://sentry.io/api/0/organizations/acme/issues/"
    assert request.params == (
        ("project", "42"),
        ("query", 'is:unresolved alertd_kind:upstream_failure provider:"openai"'),
    )
    assert dict(request.headers) == {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    assert json.loads(request.body) == {"status": "resolved"}
    assert TOKEN not in repr(request)


@pytest.mark.parametrize(
    ("provider", "quoted"),
    [
        ("openai", '"openai"'),
        ('we"ird', '"we\\"ird"'),
        ("back\\slash", '"back\\\\slash"'),
        ('end\\"', '"end\\\\\\""'),
        ("star*", '"star\\*"'),
        ("a:b(c)", '"a:b(c)"'),
    ],
)
def test_the_provider_is_quoted_and_escaped(provider: str, quoted: str) -> None:
    assert resolve_query(provider) == f"is:unresolved alertd_kind:upstream_failure provider:{quoted}"


async def test_an_unresolved_issue_is_resolved_with_one_call(api: LoopbackSentryApi) -> None:
    api.unresolved.add("openai")
    async with running(api.settings()) as run:
        run.resolver.resolve("openai")
        run.resolver.resolve("openai")  # already pending: not a second call
        await run.settled()
    assert [(c.provider, c.status) for c in api.calls] == [("openai", 200)]
    assert run.outcomes == [RESOLVED]
    assert api.refused == []
    assert api.unresolved == set()


async def test_nothing_matched_is_a_success_and_not_retried(api: LoopbackSentryApi) -> None:
    async with running(api.settings()) as run:
        run.resolver.resolve("anthropic")
        await run.settled()
    assert [(c.provider, c.status) for c in api.calls] == [("anthropic", 204)]
    assert run.outcomes == [NOTHING_MATCHED]


async def test_names_with_quotes_and_backslashes_reach_sentry_intact(api: LoopbackSentryApi) -> None:
    names = ['we"ird', "back\\slash", 'end\\"', "star*"]
    api.unresolved.update(names)
    async with running(api.settings()) as run:
        for name in names:
            run.resolver.resolve(name)
        await run.settled()
    assert sorted(c.provider or "" for c in api.calls) == sorted(names)
    assert run.outcomes == [RESOLVED] * len(names)
    assert api.refused == []


async def test_server_errors_and_429_are_retried_until_success(api: LoopbackSentryApi) -> None:
    api.unresolved.add("openai")
    api.behaviour.script = [500, 503, 429]
    async with running(api.settings()) as run:
        run.resolver.resolve("openai")
        await run.settled()
    assert [c.status for c in api.calls] == [500, 503, 429, 200]
    assert run.outcomes == [RETRYABLE_ERROR] * 3 + [RESOLVED]
    # The first failure is a warning, its retries are debug lines.
    levels = [line["level"] for line in run.log_lines() if line["event"] == "sentry_resolve_failed"]
    assert levels == ["warning", "debug", "debug"]


async def test_a_hanging_api_times_out_and_is_retried(api: LoopbackSentryApi) -> None:
    api.unresolved.add("openai")
    api.behaviour.script = ["hang"]
    async with running(api.settings(), timeout=0.5) as run:
        run.resolver.resolve("openai")
        await run.settled()
    assert [c.status for c in api.calls] == [None, 200]
    assert run.outcomes == [TIMEOUT, RESOLVED]


async def test_a_refused_connection_is_retried() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    async with running(settings_for(f"http://127.0.0.1:{port}")) as run:
        run.resolver.resolve("openai")
        await run.outcomes.wait_until(lambda: len(run.outcomes) >= 3)
        assert run.resolver.pending() == 1
        run.resolver.cancel("openai")
        assert run.resolver.pending() == 0
    assert set(run.outcomes) == {CONNECTION_ERROR}


async def test_cancel_stops_the_retries(api: LoopbackSentryApi) -> None:
    api.behaviour.status = 500
    async with running(api.settings()) as run:
        run.resolver.resolve("openai")
        await api.wait_for_calls(2)
        run.resolver.cancel("openai")
        assert run.resolver.pending() == 0
        calls = len(api.calls)
        # Many backoffs (0.01 to 0.04 s) long: a resolution still retrying would call again meanwhile.
        await anyio.sleep(0.3)
        assert len(api.calls) == calls
        assert len(run.outcomes) == calls


async def test_cancel_during_a_hanging_call_counts_it_and_does_not_retry(api: LoopbackSentryApi) -> None:
    api.behaviour.script = ["hang"]
    async with running(api.settings(), timeout=0.5) as run:
        run.resolver.resolve("openai")
        await api.wait_for_calls(1)
        run.resolver.cancel("openai")
        await run.outcomes.wait_until(lambda: len(run.outcomes) >= 1)
        await anyio.sleep(0.2)  # several backoffs: a retry would have come
    assert run.outcomes == [TIMEOUT]
    assert len(api.calls) == 1


async def test_a_new_episode_after_cancel_resolves_again(api: LoopbackSentryApi) -> None:
    api.behaviour.script = [500]
    api.unresolved.add("openai")
    async with running(api.settings(), initial_backoff=5.0, max_backoff=5.0) as run:
        run.resolver.resolve("openai")
        await api.wait_for_calls(1)
        run.resolver.cancel("openai")  # the next episode opened during the backoff
        run.resolver.resolve("openai")  # ... and resolved
        await run.settled()
    assert [c.status for c in api.calls] == [500, 200]
    assert run.outcomes == [RETRYABLE_ERROR, RESOLVED]


@pytest.mark.parametrize(
    ("token", "org", "status", "reason"),
    [("wrong-token-0123", "acme", 401, "wrong Bearer token"), (TOKEN, "someone-else", 404, "unknown organization")],
)
async def test_a_rejected_call_is_logged_once_not_retried_and_without_the_token(
    api: LoopbackSentryApi, token: str, org: str, status: int, reason: str
) -> None:
    async with running(SentryApi(api.api_url, org, 42, token)) as run:
        run.resolver.resolve("openai")
        await run.settled()
    assert run.outcomes == [REJECTED]
    assert [c.status for c in api.calls] == [status]
    assert api.refused == [reason]
    errors = [line for line in run.log_lines() if line["level"] == "error"]
    assert [(line["event"], line["status"]) for line in errors] == [("sentry_resolve_rejected", status)]
    assert token not in run.log.getvalue()


async def test_the_token_is_never_logged(api: LoopbackSentryApi) -> None:
    api.behaviour.script = [500, "hang"]
    api.unresolved.add("openai")
    async with running(api.settings(), timeout=0.5) as run:
        run.resolver.resolve("openai")
        run.resolver.resolve("anthropic")
        await run.settled()
    assert sorted(run.outcomes) == sorted([RETRYABLE_ERROR, TIMEOUT, RESOLVED, NOTHING_MATCHED])
    assert TOKEN not in run.log.getvalue()
    assert TOKEN not in repr(api.settings())


async def test_pending_is_bounded_and_kept_until_run_starts(api: LoopbackSentryApi) -> None:
    run = make_resolver(api.settings(), max_pending=2)
    for provider in ("a", "b", "c", "a"):
        run.resolver.resolve(provider)
    assert run.resolver.pending() == 2
    assert [line["provider"] for line in run.log_lines() if line["event"] == "sentry_resolve_dropped"] == ["c"]
    run.resolver.cancel("b")  # b's next episode opened: b is still tried once, not retried
    run.resolver.cancel("unknown")
    assert run.resolver.pending() == 2
    async with anyio.create_task_group() as tasks:
        await tasks.start(run.resolver.run)
        await run.settled()
        tasks.cancel_scope.cancel()
    assert sorted(str(c.provider) for c in api.calls) == ["a", "b"]
    assert run.outcomes == [NOTHING_MATCHED, NOTHING_MATCHED]


def test_every_outcome_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[1] / "SENTRY.md").read_text(encoding="utf-8")
    for outcome in OUTCOMES:
        assert f"`{outcome}`" in doc, outcome


async def test_stopping_run_ends_calls_in_flight_and_backoffs(api: LoopbackSentryApi) -> None:
    api.behaviour.script = ["hang", 500]
    async with running(api.settings(), initial_backoff=60.0, max_backoff=60.0, timeout=60.0) as run:
        run.resolver.resolve("hanging")
        run.resolver.resolve("backing-off")
        await api.wait_for_calls(2)
        await run.outcomes.wait_until(lambda: run.outcomes == [RETRYABLE_ERROR])
        assert run.resolver.pending() == 2
    # The task group was cancelled (a daemon's shutdown): both tasks ended, the session is closed.
    assert run.resolver.pending() == 0
    assert run.outcomes == [RETRYABLE_ERROR]
