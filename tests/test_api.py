"""The ingest, query, metrics and health endpoints of a real alertd over real HTTP on 127.0.0.1."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import aiohttp
import anyio
import pytest

from tests.conftest import require_tool
from tests.support.daemon import FakeClock, RunningDaemon, running_daemon

pytestmark = pytest.mark.anyio

FAIL = {"provider": "openai", "route": "/v1/chat/completions", "status": 503, "error_type": "upstream_5xx"}


@pytest.fixture
async def daemon() -> AsyncIterator[RunningDaemon]:
    async with running_daemon() as running:
        yield running


def metric(text: str, name: str, **labels: str) -> float | None:
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_five_failures_fire_one_alert_and_the_sixth_is_throttled(daemon: RunningDaemon) -> None:
    for i in range(4):
        assert await daemon.post({**FAIL, "request_id": f"r{i}"}) == (202, {"accepted": 1})
    assert daemon.logged("alert_fired") == []
    assert await daemon.post({**FAIL, "request_id": "r4"}) == (202, {"accepted": 1})
    [fired] = daemon.logged("alert_fired")
    assert fired["level"] == "error"
    assert fired["tags"]["request_id"] == "r4"
    assert fired["upstream_failure"]["count"] == 5
    assert "openai" in fired["message"]
    await daemon.post({**FAIL, "request_id": "r5"})
    assert len(daemon.logged("alert_fired")) == 1
    text = await daemon.scrape()
    assert metric(text, "alertd_failures_total", provider="openai") == 6
    assert metric(text, "alertd_alerts_total", provider="openai") == 1
    assert metric(text, "alertd_alerts_throttled_total", provider="openai") == 1
    assert metric(text, "alertd_tracked_providers") == 1
    status, body = await daemon.get_json("/v1/providers/openai")
    assert status == 200
    assert body["state"] == "alerting"
    assert (body["failures_in_window"], body["failures_total"], body["alerts_total"], body["throttled_total"]) == (
        6,
        6,
        1,
        1,
    )
    assert body["last_failure_at"].endswith("Z")
    assert body["last_alert_at"].endswith("Z")
    status, listing = await daemon.get_json("/v1/providers")
    assert status == 200
    assert [p["provider"] for p in listing["providers"]] == ["openai"]


async def test_batches_and_ndjson_count_every_event(daemon: RunningDaemon) -> None:
    assert await daemon.post([{"provider": "a"}, {"provider": "b"}, {"provider": "a"}]) == (202, {"accepted": 3})
    ndjson = b'{"provider": "a"}\n{"provider": "c"}\n'
    assert await daemon.post(ndjson, content_type="application/x-ndjson") == (202, {"accepted": 2})
    assert await daemon.post(b'{"provider": "a"}', content_type="application/json; charset=utf-8") == (
        202,
        {"accepted": 1},
    )
    text = await daemon.scrape()
    assert metric(text, "alertd_failures_total", provider="a") == 4
    assert metric(text, "alertd_failures_total", provider="c") == 1


async def test_a_bad_item_rejects_the_whole_batch_and_records_nothing(daemon: RunningDaemon) -> None:
    status, body = await daemon.post([{"provider": "a"}, {"provider": "b"}, {"provider": "bad name"}])
    assert status == 400
    assert body["error"] == "invalid_event"
    assert body["index"] == 2
    assert "whitespace" in body["detail"]
    status, _ = await daemon.get_json("/v1/providers/a")
    assert status == 404
    text = await daemon.scrape()
    assert metric(text, "alertd_failures_total", provider="a") is None
    assert metric(text, "alertd_ingest_rejected_total", reason="invalid_event") == 1


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        (b"{not json", "application/json", 400, "invalid_json"),
        (b'{"provider": "p"', "application/json", 400, "invalid_json"),
        (b'{"provider": "\xc3\x28"}', "application/json", 400, "invalid_json"),
        (b'{"provider": "p\\u0000"}', "application/json", 400, "invalid_event"),
        (b'{"provider": "p", "status": 1000}', "application/json", 400, "invalid_event"),
        (b"[" * 50_000, "application/json", 400, "invalid_json"),
        (b"", "application/json", 400, "invalid_json"),
        (b'{"provider": "p"}', "text/plain", 415, "unsupported_media_type"),
        (b'{"provider": "p"}', "application/xml", 415, "unsupported_media_type"),
    ],
)
async def test_bad_input_gets_a_clear_4xx(
    daemon: RunningDaemon, body: bytes, content_type: str, status: int, error: str
) -> None:
    got_status, got = await daemon.post(body, content_type=content_type)
    assert (got_status, got["error"]) == (status, error)
    assert got["detail"]
    text = await daemon.scrape()
    assert metric(text, "alertd_ingest_rejected_total", reason=error) == 1
    assert metric(text, "alertd_tracked_providers") == 0


async def test_missing_content_type_is_415(daemon: RunningDaemon) -> None:
    async with daemon.session.post(f"{daemon.api}/v1/failures", data=b"{}", skip_auto_headers=["Content-Type"]) as r:
        assert r.status == 415
        assert (await r.json())["error"] == "unsupported_media_type"


async def test_oversized_bodies_are_413_by_length_by_stream_and_after_inflation() -> None:
    async with running_daemon({"ALERTD_MAX_BODY_BYTES": "1024"}) as daemon:
        big = b'[{"provider": "p", "message": "' + b"x" * 2000 + b'"}]'
        status, body = await daemon.post(big)
        assert (status, body["error"]) == (413, "body_too_large")

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 200

        async with daemon.session.post(
            f"{daemon.api}/v1/failures", data=chunks(), headers={"Content-Type": "application/json"}
        ) as response:
            assert response.status == 413
            assert (await response.json())["error"] == "body_too_large"
        bomb = gzip.compress(b" " * 1_000_000)
        assert len(bomb) < 1024
        async with daemon.session.post(
            f"{daemon.api}/v1/failures",
            data=bomb,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        ) as response:
            assert response.status == 413
        text = await daemon.scrape()
        assert metric(text, "alertd_ingest_rejected_total", reason="body_too_large") == 3


async def test_wrong_method_is_405_and_unknown_paths_404(daemon: RunningDaemon) -> None:
    async with daemon.session.get(f"{daemon.api}/v1/failures") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
        assert (await response.json())["error"] == "method_not_allowed"
    async with daemon.session.put(f"{daemon.api}/v1/failures", json=FAIL) as response:
        assert response.status == 405
    async with daemon.session.get(f"{daemon.api}/nope") as response:
        assert response.status == 404
        assert (await response.json())["error"] == "not_found"
    status, body = await daemon.get_json("/v1/providers/never-seen")
    assert (status, body["error"]) == (404, "not_found")
    text = await daemon.scrape()
    assert metric(text, "alertd_ingest_rejected_total", reason="method_not_allowed") == 2


async def test_token_guards_ingest_and_query() -> None:
    async with running_daemon({"ALERTD_INGEST_TOKEN": "s3cret-token"}) as daemon:
        status, body = await daemon.post(FAIL)
        assert (status, body["error"]) == (401, "unauthorized")
        status, _ = await daemon.post(FAIL, headers={"Authorization": "Bearer wrong"})
        assert status == 401
        status, _ = await daemon.get_json("/v1/providers")
        assert status == 401
        status, _ = await daemon.get_json("/v1/providers/openai")
        assert status == 401
        good = {"Authorization": "Bearer s3cret-token"}
        assert await daemon.post(FAIL, headers=good) == (202, {"accepted": 1})
        status, body = await daemon.get_json("/v1/providers", headers=good)
        assert status == 200
        assert body["providers"][0]["failures_total"] == 1
        text = await daemon.scrape()
        assert metric(text, "alertd_ingest_rejected_total", reason="unauthorized") == 2


async def test_health_and_readiness(daemon: RunningDaemon) -> None:
    async with daemon.session.get(f"{daemon.metrics}/healthz") as response:
        assert response.status == 200
    async with daemon.session.get(f"{daemon.metrics}/readyz") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ready"


async def test_metrics_pass_promtool(daemon: RunningDaemon) -> None:
    promtool = require_tool("promtool")
    for i in range(6):
        await daemon.post({**FAIL, "provider": f"p{i % 2}"})
    await daemon.post(b"{", content_type="application/json")
    text = await daemon.scrape()
    assert "alertd_alerts_total" in text
    result = await anyio.run_process([promtool, "check", "metrics"], input=text.encode(), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == b""
    assert result.stderr.strip() == b""


async def test_cap_evicts_and_removes_the_evicted_series() -> None:
    async with running_daemon({"ALERTD_MAX_PROVIDERS": "2"}) as daemon:
        for provider in ("first", "second", "third"):
            await daemon.post({"provider": provider})
        text = await daemon.scrape()
        assert metric(text, "alertd_failures_total", provider="first") is None
        assert metric(text, "alertd_failures_total", provider="third") == 1
        assert metric(text, "alertd_tracked_providers") == 2
        assert metric(text, "alertd_providers_evicted_total") == 1
        status, _ = await daemon.get_json("/v1/providers/first")
        assert status == 404


async def test_cleanup_task_forgets_idle_providers_and_their_series() -> None:
    clock = FakeClock()
    env = {"ALERTD_WINDOW_SECONDS": "10", "ALERTD_COOLDOWN_SECONDS": "5", "ALERTD_CLEANUP_INTERVAL_SECONDS": "0.05"}
    async with running_daemon(env, clock=clock) as daemon:
        await daemon.post([{"provider": "gone"}, {"provider": "stays"}])
        clock.advance(8)
        await daemon.post({"provider": "stays"})
        clock.advance(3)  # "gone" is 11 s old: idle; "stays" is 3 s old
        with anyio.fail_after(5):
            while (await daemon.get_json("/v1/providers/gone"))[0] != 404:  # noqa: ASYNC110 - a client's view
                await anyio.sleep(0.02)
        status, _ = await daemon.get_json("/v1/providers/stays")
        assert status == 200
        text = await daemon.scrape()
        assert metric(text, "alertd_failures_total", provider="gone") is None
        assert metric(text, "alertd_failures_total", provider="stays") == 2


async def test_window_and_cooldown_follow_the_injected_clock() -> None:
    clock = FakeClock()
    env = {
        "ALERTD_THRESHOLD": "3",
        "ALERTD_WINDOW_SECONDS": "10",
        "ALERTD_COOLDOWN_SECONDS": "60",
        # The episode stays open through the cooldown: its resolution would end the cooldown.
        "ALERTD_RESOLVE_AFTER_SECONDS": "120",
    }
    async with running_daemon(env, clock=clock) as daemon:
        await daemon.post([{"provider": "p"}] * 2)
        clock.advance(10.5)
        await daemon.post({"provider": "p"})  # the first two fell out of the window
        assert daemon.logged("alert_fired") == []
        await daemon.post({"provider": "p"})
        clock.advance(1)
        await daemon.post({"provider": "p"})
        assert len(daemon.logged("alert_fired")) == 1
        clock.advance(59)
        await daemon.post([{"provider": "p"}] * 3)
        assert len(daemon.logged("alert_fired")) == 1  # 59 s after the alert: the hit is throttled
        clock.advance(1)
        await daemon.post({"provider": "p"})
        fired = daemon.logged("alert_fired")
        assert len(fired) == 2
        assert fired[1]["upstream_failure"]["throttled_since_last_alert"] == 1


async def test_ingest_errors_are_logged_at_debug_only() -> None:
    async with running_daemon({"ALERTD_LOG_LEVEL": "info"}) as daemon:
        for _ in range(20):
            await daemon.post(b"{", content_type="application/json")
        assert daemon.logged("ingest_rejected") == []
    async with running_daemon({"ALERTD_LOG_LEVEL": "debug"}) as daemon:
        await daemon.post(b"{", content_type="application/json")
        [line] = daemon.logged("ingest_rejected")
        assert line["level"] == "debug"


async def test_keeps_serving_after_client_disconnects_midway(daemon: RunningDaemon) -> None:
    port = int(daemon.api.rsplit(":", 1)[1])
    stream = await anyio.connect_tcp("127.0.0.1", port)
    await stream.send(
        b"POST /v1/failures HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"provider"'
    )
    await stream.aclose()
    assert await daemon.post(FAIL) == (202, {"accepted": 1})
    timeout = aiohttp.ClientTimeout(total=5)
    async with daemon.session.get(f"{daemon.metrics}/healthz", timeout=timeout) as response:
        assert response.status == 200
