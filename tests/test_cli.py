"""The `alertd` command as a user runs it: real child processes, real signals, real sockets."""

from __future__ import annotations

import json
import signal
import socket

import aiohttp
import anyio
import pytest

from tests.support.process import COMMAND, alertd_serve, child_env
from tests.support.sentry_server import PUBLIC_KEY, LoopbackSentry

pytestmark = pytest.mark.anyio


async def run_alertd(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = await anyio.run_process([*COMMAND, *args], env=child_env(env or {}), check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_check_config_prints_effective_config_with_secrets_redacted() -> None:
    env = {
        "ALERTD_INGEST_TOKEN": "tok-123456",
        "SENTRY_DSN": "https://deadbeefcafe@sentry.example/7",
        "ALERTD_THRESHOLD": "9",
    }
    code, out, err = await run_alertd("check-config", env=env)
    assert code == 0, err
    printed = json.loads(out)["config"]
    assert printed["ALERTD_THRESHOLD"] == 9
    assert printed["ALERTD_INGEST_TOKEN"] == "<redacted>"
    assert printed["SENTRY_DSN"] == "https://***@sentry.example/7"
    assert "tok-123456" not in out + err
    assert "deadbeefcafe" not in out + err


async def test_invalid_config_exits_2_with_one_line_naming_the_variable() -> None:
    for command in ("check-config", "serve", "send-test"):
        code, out, err = await run_alertd(command, env={"ALERTD_WINDOW_SECONDS": "-3"})
        assert code == 2
        assert out == ""
        assert err.strip().splitlines() == [
            "alertd: ALERTD_WINDOW_SECONDS='-3' is invalid: expected a number from 0.001 to 1e7"
        ]


async def test_busy_port_names_the_setting() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        code, _, err = await run_alertd("serve", env={"ALERTD_LISTEN": f"127.0.0.1:{port}"})
    assert code == 1
    assert f"ALERTD_LISTEN=127.0.0.1:{port}" in err
    assert "Traceback" not in err


async def test_send_test_delivers_a_labelled_alert(sentry: LoopbackSentry) -> None:
    code, out, err = await run_alertd("send-test", env={"SENTRY_DSN": sentry.dsn})
    assert code == 0, err
    result = json.loads(out)
    assert result["outcome"] == "sent"
    [event] = await sentry.wait_for_events(1)
    assert event["event_id"] == result["event_id"]
    assert event["message"].startswith("[TEST ALERT")
    assert event["tags"]["alertd_test"] == "true"
    assert PUBLIC_KEY not in out


async def test_send_test_reports_failure_and_missing_dsn(sentry: LoopbackSentry) -> None:
    sentry.behaviour.status = 500
    code, out, _ = await run_alertd("send-test", env={"SENTRY_DSN": sentry.dsn})
    assert code == 1
    assert json.loads(out)["outcome"] == "http_error"
    code, _, err = await run_alertd("send-test")
    assert code == 2
    assert "SENTRY_DSN" in err


async def test_sigterm_drains_a_queued_alert_then_exits_0(sentry: LoopbackSentry) -> None:
    sentry.behaviour.delay = 1.0  # the alert is still on its way when SIGTERM arrives
    env = {"SENTRY_DSN": sentry.dsn, "ALERTD_THRESHOLD": "2", "ALERTD_SHUTDOWN_TIMEOUT_SECONDS": "5"}
    async with alertd_serve(env) as child, aiohttp.ClientSession() as session:
        async with session.post(f"{child.api_url}/v1/failures", json=[{"provider": "p"}] * 2) as response:
            assert response.status == 202
        await child.wait_for("alert_fired")
        child.process.send_signal(signal.SIGTERM)
        await child.wait_for("alertd_draining")
        async with session.get(f"{child.metrics_url}/readyz") as response:
            assert response.status == 503
            assert (await response.json())["status"] == "draining"
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.post(f"{child.api_url}/v1/failures", json={"provider": "p"}):
                pass
        with anyio.fail_after(10):
            assert await child.process.wait() == 0
    [event] = sentry.events
    assert event["tags"]["provider"] == "p"
    events = [line["event"] for line in child.lines]
    assert events.index("alertd_draining") < events.index("alertd_stopped")


async def test_shutdown_is_bounded_when_sentry_hangs(sentry: LoopbackSentry) -> None:
    sentry.behaviour.hang = True
    env = {"SENTRY_DSN": sentry.dsn, "ALERTD_THRESHOLD": "1", "ALERTD_SHUTDOWN_TIMEOUT_SECONDS": "1"}
    async with alertd_serve(env) as child, aiohttp.ClientSession() as session:
        async with session.post(f"{child.api_url}/v1/failures", json={"provider": "p"}) as response:
            assert response.status == 202
        await child.wait_for("alert_fired")
        start = anyio.current_time()
        child.process.send_signal(signal.SIGINT)
        with anyio.fail_after(10):
            assert await child.process.wait() == 0
        # Bounded by the timeout plus process teardown, not by the hanging Sentry.
        assert anyio.current_time() - start < 8


async def test_serve_without_sentry_logs_alerts_as_json() -> None:
    async with alertd_serve({"ALERTD_THRESHOLD": "5"}) as child, aiohttp.ClientSession() as session:
        for _ in range(5):
            async with session.post(f"{child.api_url}/v1/failures", json={"provider": "openai"}) as response:
                assert response.status == 202
        fired = await child.wait_for("alert_fired")
        assert fired["tags"]["provider"] == "openai"
        assert (await child.wait_for("alertd_started"))["sentry"] == "off"
        child.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(10):
            assert await child.process.wait() == 0
    assert all(line.startswith("{") for line in child.raw if line)
