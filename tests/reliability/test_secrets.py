"""Guarantee 6: secrets stay secret, through every path, for any key and any token.

tests/test_secrets.py proves it for one fixed key, token and DSN; this module drives random ones
(hypothesis) through every ingest shape, the rejection paths and an internal error, and checks the
comparison of the token.
"""

from __future__ import annotations

import gzip
import hmac
import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import aiohttp
import anyio
import pytest
from anyio import to_thread
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alertd.event import FailureEvent
from alertd.tracker import Recorded
from tests.reliability.helpers import raw_request, read_all
from tests.support.daemon import RunningDaemon, running_daemon
from tests.support.process import COMMAND, alertd_serve, child_env
from tests.support.sentry_server import PUBLIC_KEY, LoopbackSentry, loopback_sentry

pytestmark = pytest.mark.anyio

# Any unicode for keys, any visible ASCII for tokens (what the config accepts). Each secret gets a
# random 12-hex-digit core so that it cannot match other output by chance (hypothesis finds such
# matches: a token "alertd_sentry_ev" is in every scrape).
KEYS = st.text(max_size=200).map(lambda k: f"{k}{uuid.uuid4().hex[:12]}{k}").filter(lambda k: k.strip() == k)
TOKENS = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80).map(
    lambda t: f"{t}{uuid.uuid4().hex[:12]}"
)


def everything_seen(daemon: RunningDaemon, sentry: LoopbackSentry, extra: Sequence[str]) -> str:
    """Every output of the daemon so far: log, Sentry bodies, and the answers the test collected."""
    return "\n".join([daemon.log_stream.getvalue(), *(b.decode("utf-8", "replace") for b in sentry.raw_bodies), *extra])


@contextmanager
def daemon_in_portal(env: dict[str, str]) -> Iterator[tuple[BlockingPortal, RunningDaemon, LoopbackSentry]]:
    """A real daemon and loopback Sentry in a background event loop, for synchronous hypothesis tests."""
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(loopback_sentry()) as sentry:
        full = {"ALERTD_THRESHOLD": "2", "ALERTD_COOLDOWN_SECONDS": "0", "SENTRY_DSN": sentry.dsn, **env}
        with portal.wrap_async_context_manager(running_daemon(full)) as daemon:
            yield portal, daemon, sentry


def explode_on(daemon: RunningDaemon, provider: str) -> None:
    """Make the tracker fail for `provider`: an internal error, reported to Sentry, mid-request."""
    tracker = daemon.listening.service.tracker
    real = tracker.record

    async def record(events: Sequence[FailureEvent]) -> Recorded:
        if any(event.provider == provider for event in events):
            raise RuntimeError("tracker exploded")
        return await real(events)

    tracker.record = record  # type: ignore[method-assign]


async def exercise(daemon: RunningDaemon, key: str, token: str) -> list[str]:
    """Send `key` with `token` through every path; returns every answer body."""
    auth = {"Authorization": f"Bearer {token}"}
    event = {"provider": "openai", "api_key": key, "request_id": "r"}
    answers: list[str] = []

    async def post(data: bytes, content_type: str = "application/json", **headers: str) -> None:
        async with daemon.session.post(
            f"{daemon.api}/v1/failures", data=data, headers={"Content-Type": content_type, **auth, **headers}
        ) as response:
            answers.append(await response.text())
            assert response.status < 500 or headers.get("X-Expect") == "500", response.status

    await post(json.dumps(event).encode())
    await post(json.dumps([event, event]).encode())  # fires an alert: the key reaches log and Sentry
    await post(("\n".join([json.dumps(event)] * 2) + "\n").encode(), "application/x-ndjson")
    await post(gzip.compress(json.dumps([event] * 2).encode()), **{"Content-Encoding": "gzip"})
    await post(json.dumps([event, {"provider": "bad name", "api_key": key}]).encode())  # 400
    await post(json.dumps({"provider": "p", "api_key": key * 60}).encode())  # 400: key too long
    await post(json.dumps({**event, "provider": "explode"}).encode(), **{"X-Expect": "500"})
    auth["Authorization"] = f"Bearer {token}x"
    await post(json.dumps(event).encode())  # 401, with a wrong token that contains the right one
    auth["Authorization"] = f"Bearer {token}"
    for path in ("/v1/providers", "/v1/providers/openai"):
        async with daemon.session.get(f"{daemon.api}{path}", headers=auth) as response:
            answers.append(await response.text())
    answers.append(await daemon.scrape())
    return answers


def assert_secret_free(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text
        assert json.dumps(secret)[1:-1] not in text  # nor in its JSON-escaped form


async def test_an_internal_error_sends_no_request_data_to_sentry(sentry: LoopbackSentry) -> None:
    """Found by this suite: the SDK attached frame locals (the raw body, the Authorization header)."""
    key, token = "sk-live-RAWKEY-0123456789abcdef", "ingest-token-XYZ-987654321"
    async with running_daemon({"SENTRY_DSN": sentry.dsn, "ALERTD_INGEST_TOKEN": token}) as daemon:
        explode_on(daemon, "p")
        status, _ = await daemon.post({"provider": "p", "api_key": key}, headers={"Authorization": f"Bearer {token}"})
        assert status == 500
        [event] = await sentry.wait_for_events(1)
    assert event["exception"]["values"][-1]["value"] == "tracker exploded"
    bodies = b"".join(sentry.raw_bodies).decode()
    assert "RAWKEY" not in bodies
    assert token not in bodies


def test_any_key_through_any_path_never_appears_in_any_output() -> None:
    token = "fixed-token-for-the-key-property"
    with daemon_in_portal({"ALERTD_INGEST_TOKEN": token, "ALERTD_API_KEY_SALT": "salt"}) as (portal, daemon, sentry):
        explode_on(daemon, "explode")

        @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(key=KEYS)
        def check(key: str) -> None:
            answers = portal.call(exercise, daemon, key, token)
            portal.call(sentry.wait_for_events, 1)
            assert_secret_free(everything_seen(daemon, sentry, answers), key, token)

        check()
        assert daemon.logged("alert_fired")
        assert daemon.logged("internal_error")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token=TOKENS, key=KEYS)
def test_any_token_never_appears_in_any_output(token: str, key: str) -> None:
    with daemon_in_portal({"ALERTD_INGEST_TOKEN": token}) as (portal, daemon, sentry):
        explode_on(daemon, "explode")
        answers = portal.call(exercise, daemon, key, token)
        portal.call(sentry.wait_for_events, 2)  # an alert and the internal error
        assert_secret_free(everything_seen(daemon, sentry, answers), key, token)


def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every check goes through hmac.compare_digest on the whole header, never through ==."""
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the module alertd.api calls it through
    token = "t" * 40
    with daemon_in_portal({"ALERTD_INGEST_TOKEN": token}) as (portal, daemon, _):
        tries = ["", "Bearer", f"Bearer {token[:-1]}", f"Bearer {token}", f"Bearer {token}tail", "Basic abc"]

        async def send_all() -> list[int]:
            statuses = []
            for value in tries:
                status, _ = await daemon.post({"provider": "p"}, headers={"Authorization": value})
                statuses.append(status)
            return statuses

        assert portal.call(send_all) == [401, 401, 401, 202, 401, 401]
    assert [a for a, _ in calls] == [value.encode() for value in tries]
    assert all(b == f"Bearer {token}".encode() for _, b in calls)


async def test_a_non_utf8_authorization_header_is_401_not_500() -> None:
    """Found by this suite: a header byte that is not UTF-8 made the comparison raise (500)."""
    async with running_daemon({"ALERTD_INGEST_TOKEN": "token-123456"}) as daemon:
        port = int(daemon.api.rsplit(":", 1)[1])
        for value in (b"Bearer \xff\xfe", b"Bearer token-123456\x80", b"\xc3\x28"):
            headers = {b"Authorization": value, b"Content-Type": b"application/json"}
            response = await to_thread.run_sync(partial(raw_request, port, headers=headers, body=b'{"provider":"p"}'))
            assert response.status == 401, value
        assert daemon.logged("internal_error") == []


async def test_the_dsn_key_is_in_no_log_line_of_a_serving_daemon(sentry: LoopbackSentry) -> None:
    sentry.behaviour.status = 500  # the SDK's own complaints must not print the DSN either
    env = {"SENTRY_DSN": sentry.dsn, "ALERTD_THRESHOLD": "1", "ALERTD_LOG_LEVEL": "debug"}
    async with alertd_serve(env) as child, aiohttp.ClientSession() as session:
        async with session.post(f"{child.api_url}/v1/failures", json={"provider": "p"}) as response:
            assert response.status == 202
        await child.wait_for("sentry_event_undelivered")
        child.process.terminate()
        await child.process.wait()
        stderr = await read_all(child.process.stderr)
    assert child.raw
    assert all(PUBLIC_KEY not in line for line in child.raw)
    assert PUBLIC_KEY not in stderr


async def test_check_config_redacts_every_part_of_the_dsn_even_when_it_is_invalid() -> None:
    secret_key, secret_password = "f00dfeedcafe1234", "hunter2-password"
    for dsn, code in (
        (f"https://{secret_key}:{secret_password}@sentry.example/7", 0),
        (f"https://{secret_key}:{secret_password}@sentry.example/not-a-project", 2),
    ):
        result = await anyio.run_process(
            [*COMMAND, "check-config"],
            env=child_env({"SENTRY_DSN": dsn, "ALERTD_INGEST_TOKEN": "tok-abcdef"}),
            check=False,
        )
        output = result.stdout.decode() + result.stderr.decode()
        assert result.returncode == code, output
        assert "SENTRY_DSN" in output
        for secret in (secret_key, secret_password, "tok-abcdef"):
            assert secret not in output
