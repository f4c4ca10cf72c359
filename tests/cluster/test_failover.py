"""Cluster mode in one real alertd against a real redis-server: status, fallback, recovery, bounded latency."""

from __future__ import annotations

import io
import signal
import time
from pathlib import Path

import anyio
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from alertd.logs import make_logger
from alertd.metrics import BackendMetrics
from alertd.redis_tracker import RECONNECT_FIRST, RECONNECT_MAX, FailoverTracker, RedisTracker
from alertd.tracker import MemoryTracker
from alertd.window import Rule
from tests.conftest import require_tool
from tests.support.daemon import RunningDaemon, running_daemon
from tests.support.redis_server import RedisServer, free_port, redis_server

pytestmark = pytest.mark.anyio

ENV = {"ALERTD_THRESHOLD": "5", "ALERTD_COOLDOWN_SECONDS": "60", "ALERTD_REDIS_TIMEOUT_SECONDS": "0.25"}


def failures(provider: str, n: int, start: int = 0) -> list[dict[str, object]]:
    return [{"provider": provider, "request_id": f"{provider}-{start + i}", "status": 503} for i in range(n)]


async def post_each(daemon: RunningDaemon, provider: str, n: int) -> None:
    for item in failures(provider, n):
        status, body = await daemon.post(item)
        assert (status, body) == (202, {"accepted": 1})


async def readyz(daemon: RunningDaemon) -> int:
    async with daemon.session.get(f"{daemon.metrics}/readyz") as response:
        return response.status


async def wait_for_mode(daemon: RunningDaemon, mode: str, within: float = 8.0) -> dict[str, object]:
    with anyio.fail_after(within):
        while True:
            status, body = await daemon.get_json("/v1/status")
            assert status == 200
            if body["mode"] == mode:
                return body  # type: ignore[no-any-return]
            await anyio.sleep(0.05)


async def test_redis_mode_reports_status_mode_and_backend_metrics(redis_srv: RedisServer) -> None:
    async with running_daemon({**ENV, "ALERTD_REDIS_URL": redis_srv.url, "ALERTD_REDIS_PREFIX": "t1:"}) as daemon:
        status = await wait_for_mode(daemon, "redis")
        backend = status["backend"]
        assert isinstance(backend, dict)
        assert backend["up"] is True
        assert (backend["kind"], backend["prefix"], backend["timeout_seconds"]) == ("redis", "t1:", 0.25)
        await post_each(daemon, "openai", 6)
        alerts = daemon.logged("alert_fired")
        assert len(alerts) == 1
        assert "alertd_mode" not in alerts[0]["tags"]
        assert alerts[0]["upstream_failure"]["count"] == 5
        _, listing = await daemon.get_json("/v1/providers")
        assert listing["mode"] == "redis"
        assert [(p["provider"], p["failures_in_window"], p["throttled_total"]) for p in listing["providers"]] == [
            ("openai", 6, 1)
        ]
        _, one = await daemon.get_json("/v1/providers/openai")
        assert (one["mode"], one["state"], one["alerts_total"]) == ("redis", "alerting", 1)
        missing, body = await daemon.get_json("/v1/providers/nobody")
        assert (missing, body["mode"]) == (404, "redis")
        scraped = await daemon.scrape()
        assert "alertd_backend_up 1.0" in scraped
        assert 'alertd_backend_errors_total{reason="connection"} 0.0' in scraped
        # The reconnect probe's pseudo-provider (a space: no real provider's name) writes one small key.
        assert await redis_srv_keys(redis_srv) == {"{t1:openai}:r", "{t1:openai}:b", "{t1:openai}:s", "{t1: probe}:s"}


async def redis_srv_keys(server: RedisServer) -> set[str]:
    client = Redis.from_url(server.url, decode_responses=True)
    try:
        keys = {key.decode() if isinstance(key, bytes) else key for key in await client.keys("*")}
        for key in keys:
            assert await client.pttl(key) > 0, f"{key} has no expiry"
        return keys
    finally:
        await client.aclose()


async def test_memory_mode_says_so() -> None:
    async with running_daemon(ENV) as daemon:
        assert await daemon.get_json("/v1/status") == (200, {"mode": "memory"})
        assert "alertd_backend_up" not in await daemon.scrape()


async def test_redis_killed_alerts_still_fire_then_cluster_mode_returns(redis_srv: RedisServer) -> None:
    async with running_daemon({**ENV, "ALERTD_REDIS_URL": redis_srv.url}) as daemon:
        await wait_for_mode(daemon, "redis")
        redis_srv.stop()
        await post_each(daemon, "bedrock", 5)
        alerts = daemon.logged("alert_fired")
        assert len(alerts) == 1, "the fifth failure alerts, decided in this process"
        assert alerts[0]["tags"]["alertd_mode"] == "fallback"
        assert await readyz(daemon) == 200
        status = await wait_for_mode(daemon, "redis-fallback", within=0.1)
        assert status["backend"]["up"] is False  # type: ignore[index]
        scraped = await daemon.scrape()
        assert "alertd_backend_up 0.0" in scraped
        assert 'alertd_backend_errors_total{reason="connection"}' in scraped
        assert 'alertd_backend_errors_total{reason="connection"} 0.0' not in scraped
        await post_each(daemon, "bedrock", 3)  # more failures during the same outage
        assert len(daemon.logged("backend_down")) == 1, "one line per outage"
        redis_srv.start()
        await wait_for_mode(daemon, "redis")
        assert len(daemon.logged("backend_up")) == 1
        assert "alertd_backend_up 1.0" in await daemon.scrape()
        await post_each(daemon, "anthropic", 5)
        alerts = daemon.logged("alert_fired")
        assert [a["tags"]["provider"] for a in alerts] == ["bedrock", "anthropic"]
        assert "alertd_mode" not in alerts[1]["tags"], "decided in Redis again"
        assert len(daemon.logged("backend_down")) == 1


async def test_starts_ready_while_redis_is_down_and_connects_when_it_comes(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)  # not started yet
    async with running_daemon({**ENV, "ALERTD_REDIS_URL": server.url}) as daemon:
        assert await readyz(daemon) == 200
        await wait_for_mode(daemon, "redis-fallback", within=0.1)
        assert len(daemon.logged("backend_down")) == 1
        await post_each(daemon, "openai", 5)
        assert [a["tags"]["alertd_mode"] for a in daemon.logged("alert_fired")] == ["fallback"]
        server.start()
        try:
            await wait_for_mode(daemon, "redis")
        finally:
            server.stop()


async def test_a_hung_redis_delays_ingest_by_at_most_the_timeout(redis_srv: RedisServer) -> None:
    async with running_daemon(
        {**ENV, "ALERTD_REDIS_URL": redis_srv.url, "ALERTD_REDIS_TIMEOUT_SECONDS": "0.2"}
    ) as daemon:
        await wait_for_mode(daemon, "redis")
        assert redis_srv.process is not None
        redis_srv.process.send_signal(signal.SIGSTOP)  # accepts nothing, answers nothing
        try:
            started = time.monotonic()
            await post_each(daemon, "slow", 5)
            elapsed = time.monotonic() - started
            # The first call waits the timeout and switches; the next four are decided locally at once.
            assert elapsed < 0.2 + 0.5, elapsed
            assert [a["tags"]["alertd_mode"] for a in daemon.logged("alert_fired")] == ["fallback"]
            assert 'alertd_backend_errors_total{reason="timeout"} 1.0' in await daemon.scrape()
        finally:
            redis_srv.process.send_signal(signal.SIGCONT)
        await wait_for_mode(daemon, "redis")
        # The cancelled call left no stray reply behind: the next answers belong to the next calls.
        await post_each(daemon, "after", 5)
        await post_each(daemon, "after-2", 5)
        fired = daemon.logged("alert_fired")
        assert [(a["tags"]["provider"], a["tags"].get("alertd_mode")) for a in fired[1:]] == [
            ("after", None),
            ("after-2", None),
        ]
        _, listing = await daemon.get_json("/v1/providers")
        assert {p["provider"]: p["failures_in_window"] for p in listing["providers"]} == {
            # Redis ran the timed-out call once it woke: 1 failure there, also decided locally (a duplicate
            # is possible, a miss is not); the four fallback ones it never saw.
            "slow": 1,
            "after": 5,
            "after-2": 5,
        }


ACL = (
    "resetkeys ~{alertd:* resetchannels -@all +evalsha +script|load +time +llen +lrange +lindex +lset +rpush"
    " +lpop +ltrim +hget +hmget +hset +hdel +del +hincrby +hgetall +pexpire +ping +hello"
)


async def test_the_documented_acl_is_enough(redis_srv: RedisServer) -> None:
    cli = require_tool("redis-cli")
    command = [cli, "-p", str(redis_srv.port), "ACL", "SETUSER", "alertd", "on", ">acl-pw-0192", *ACL.split()]
    result = await anyio.run_process(command)
    assert result.stdout.strip() == b"OK"
    url = f"redis://alertd:acl-pw-0192@127.0.0.1:{redis_srv.port}/0"
    async with running_daemon({**ENV, "ALERTD_REDIS_URL": url}) as daemon:
        await wait_for_mode(daemon, "redis")
        await post_each(daemon, "openai", 6)
        _, one = await daemon.get_json("/v1/providers/openai")
        assert (one["mode"], one["failures_in_window"], one["throttled_total"]) == ("redis", 6, 1)
        assert [a["tags"].get("alertd_mode") for a in daemon.logged("alert_fired")] == [None]
        assert 'alertd_backend_errors_total{reason="response"} 0.0' in await daemon.scrape()
        assert 'alertd_backend_errors_total{reason="auth"} 0.0' in await daemon.scrape()


async def test_wrong_password_counts_as_redis_down(tmp_path: Path) -> None:
    with redis_server(tmp_path, password="right-password-123") as server:
        url = f"redis://:wrong-password-456@127.0.0.1:{server.port}/0"
        async with running_daemon({**ENV, "ALERTD_REDIS_URL": url}) as daemon:
            status = await wait_for_mode(daemon, "redis-fallback", within=0.1)
            assert status["backend"]["url"] == f"redis://:***@127.0.0.1:{server.port}/0"  # type: ignore[index]
            assert status["backend"]["last_error"] == "auth"  # type: ignore[index]
            await post_each(daemon, "openai", 5)
            assert len(daemon.logged("alert_fired")) == 1
            assert 'alertd_backend_errors_total{reason="auth"}' in await daemon.scrape()
            assert "wrong-password-456" not in daemon.log_stream.getvalue()


async def test_nothing_listening_is_a_connection_error_not_a_hang() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    async with running_daemon({**ENV, "ALERTD_REDIS_URL": url}) as daemon:
        assert time.monotonic() - started < 2
        await wait_for_mode(daemon, "redis-fallback", within=0.1)


async def test_a_flushed_script_is_reloaded_without_falling_back(redis_srv: RedisServer) -> None:
    async with running_daemon({**ENV, "ALERTD_REDIS_URL": redis_srv.url}) as daemon:
        await wait_for_mode(daemon, "redis")
        await post_each(daemon, "openai", 5)
        flush = await anyio.run_process([require_tool("redis-cli"), "-p", str(redis_srv.port), "SCRIPT", "FLUSH"])
        assert flush.stdout.strip() == b"OK"
        await post_each(daemon, "bedrock", 5)  # EVALSHA answers NOSCRIPT: load, run again, no fallback
        assert [(a["tags"]["provider"], a["tags"].get("alertd_mode")) for a in daemon.logged("alert_fired")] == [
            ("openai", None),
            ("bedrock", None),
        ]
        assert daemon.logged("backend_down") == []
        _, one = await daemon.get_json("/v1/providers/bedrock")
        assert one["failures_in_window"] == 5, "the failure that met NOSCRIPT was counted once"


async def test_a_redis_that_refuses_a_script_command_is_one_outage_not_a_flapping_one(redis_srv: RedisServer) -> None:
    command = [require_tool("redis-cli"), "-p", str(redis_srv.port), "ACL", "SETUSER", "alertd", "on", ">pw-2"]
    result = await anyio.run_process([*command, *ACL.replace(" +pexpire", "").split()])
    assert result.stdout.strip() == b"OK"
    url = f"redis://alertd:pw-2@127.0.0.1:{redis_srv.port}/0"
    async with running_daemon({**ENV, "ALERTD_REDIS_URL": url}) as daemon:
        await wait_for_mode(daemon, "redis-fallback", within=0.1)
        await post_each(daemon, "openai", 5)
        await anyio.sleep(1.0)  # probes at +0.1, +0.3, +0.7 s: each one fails inside the script
        await post_each(daemon, "openai", 2)
        assert [a["tags"]["alertd_mode"] for a in daemon.logged("alert_fired")] == ["fallback"]
        assert [line["event"] for line in daemon.log_lines() if line["event"].startswith("backend_")] == [
            "backend_down"
        ]
        scraped = await daemon.scrape()
        assert "alertd_backend_up 0.0" in scraped
        # Refused inside the script: Redis answers an error reply, not NOPERM to the command itself.
        errors = [
            line for line in scraped.splitlines() if line.startswith('alertd_backend_errors_total{reason="response"}')
        ]
        assert float(errors[0].split()[-1]) >= 3


async def test_reconnect_backoff_doubles_up_to_its_cap() -> None:
    assert (RECONNECT_FIRST, RECONNECT_MAX) == (0.1, 5.0)
    rule = Rule()
    client = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens: every probe fails at once
    shared = RedisTracker(client, rule, MemoryTracker(rule, 10))
    registry = CollectorRegistry()
    metrics = BackendMetrics(registry)
    log = make_logger("info", "json", stream=io.StringIO())
    tracker = FailoverTracker(shared, metrics, log, timeout=0.2, details={}, backoff=(0.01, 0.04))
    async with anyio.create_task_group() as tasks:
        await tasks.start(tracker.run)
        await anyio.sleep(0.6)
        tasks.cancel_scope.cancel()
    probes = registry.get_sample_value("alertd_backend_errors_total", {"reason": "connection"})
    assert probes is not None
    # Capped at 0.04 s: ~16 probes in 0.6 s. Uncapped (0.01, 0.02, 0.04, 0.08, 0.16, 0.32): 6.
    assert 10 <= probes <= 20, probes


async def test_a_slow_query_is_not_an_outage(redis_srv: RedisServer) -> None:
    async with running_daemon({**ENV, "ALERTD_REDIS_URL": redis_srv.url}) as daemon:
        await wait_for_mode(daemon, "redis")
        await daemon.post([{"provider": f"p{i}"} for i in range(50)])
        tracker = daemon.listening.service.tracker
        assert isinstance(tracker, FailoverTracker)
        tracker.timeout = 1e-9  # every read now times out, as a GET over thousands of providers can
        status, body = await daemon.get_json("/v1/providers")
        assert status == 200
        assert len(body["providers"]) == 50  # answered from this process's figures
        status, _ = await daemon.get_json("/v1/providers/p1")
        assert status == 200
        tracker.timeout = 0.25
        assert body["mode"] == "redis"
        assert (await daemon.get_json("/v1/status"))[1]["mode"] == "redis"
        assert daemon.logged("backend_down") == []
        assert 'alertd_backend_errors_total{reason="timeout"} 2.0' in await daemon.scrape()
        await post_each(daemon, "after", 5)
        assert [a["tags"].get("alertd_mode") for a in daemon.logged("alert_fired")] == [None]


async def test_a_burst_straddling_the_recovery_still_alerts(redis_srv: RedisServer) -> None:
    # 2 failures decided in Redis, 2 in fallback, the 5th after Redis is back: the shared window lacks the
    # fallback ones, so for one WINDOW after a recovery this process decides on its own windows as well.
    async with running_daemon({**ENV, "ALERTD_REDIS_URL": redis_srv.url}) as daemon:
        await wait_for_mode(daemon, "redis")
        await post_each(daemon, "burst", 2)
        assert redis_srv.process is not None
        redis_srv.process.send_signal(signal.SIGSTOP)
        try:
            await post_each(daemon, "burst", 2)
            assert (await daemon.get_json("/v1/status"))[1]["mode"] == "redis-fallback"
        finally:
            redis_srv.process.send_signal(signal.SIGCONT)
        await wait_for_mode(daemon, "redis")
        assert daemon.logged("alert_fired") == []
        await post_each(daemon, "burst", 1)
        [fired] = daemon.logged("alert_fired")
        assert fired["tags"]["alertd_mode"] == "fallback"
        assert fired["upstream_failure"]["count"] == 5
        # Redis's window catches up (the 5th of its own failures) and alerts once more: the documented
        # price of failing open is a duplicate, never a miss. Then both cooldowns hold.
        await post_each(daemon, "burst", 3)
        assert [a["tags"].get("alertd_mode") for a in daemon.logged("alert_fired")] == ["fallback", None]
