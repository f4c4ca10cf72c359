"""ALERTD_REDIS_CLUSTER=true against a real Redis Cluster of three masters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis

from tests.cluster.test_failover import wait_for_mode
from tests.support.daemon import running_daemon
from tests.support.redis_server import RedisServer, redis_cluster

pytestmark = pytest.mark.anyio

PROVIDERS = [f"provider-{i}" for i in range(12)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[RedisServer]]:
    with redis_cluster(tmp_path) as nodes:
        yield nodes


async def keys_on(node: RedisServer) -> set[str]:
    client = Redis.from_url(node.url, decode_responses=True)
    try:
        return {key.decode() if isinstance(key, bytes) else key for key in await client.keys("*")}
    finally:
        await client.aclose()


async def test_two_alertd_on_a_three_master_cluster_share_every_provider(cluster: list[RedisServer]) -> None:
    env = {"ALERTD_THRESHOLD": "5", "ALERTD_COOLDOWN_SECONDS": "60", "ALERTD_REDIS_CLUSTER": "true"}
    first_url, other_url = cluster[0].url, cluster[2].url  # the URL names any one node
    async with (
        running_daemon({**env, "ALERTD_REDIS_URL": first_url}) as one,
        running_daemon({**env, "ALERTD_REDIS_URL": other_url}) as two,
    ):
        for daemon in (one, two):
            _, status = await daemon.get_json("/v1/status")
            assert (status["mode"], status["backend"]["kind"]) == ("redis", "redis-cluster")
        for i in range(6):
            daemon = (one, two)[i % 2]
            status_code, _ = await daemon.post([{"provider": p, "request_id": f"{p}-{i}"} for p in PROVIDERS])
            assert status_code == 202
        fired = one.logged("alert_fired") + two.logged("alert_fired")
        assert sorted(a["tags"]["provider"] for a in fired) == sorted(PROVIDERS), "one alert per provider"
        assert all("alertd_mode" not in a["tags"] for a in fired)
        assert {a["upstream_failure"]["count"] for a in fired} == {5}
        _, listing = await two.get_json("/v1/providers")
        assert listing["mode"] == "redis"
        assert {
            p["provider"]: (p["failures_in_window"], p["throttled_total"]) for p in listing["providers"]
        } == dict.fromkeys(PROVIDERS, (6, 1))
    spread = [{key for key in await keys_on(node) if " probe}" not in key} for node in cluster]
    assert sum(len(keys) for keys in spread) == 3 * len(PROVIDERS)
    assert sum(1 for keys in spread if keys) >= 2, "the providers' slots live on several masters"
    for keys in spread:
        for key in keys:  # one provider's three keys share a hash tag, hence a node
            tag = key.rpartition(":")[0]
            assert {f"{tag}:r", f"{tag}:b", f"{tag}:s"} <= keys


async def test_a_master_down_means_fallback_and_its_return_means_cluster_mode(cluster: list[RedisServer]) -> None:
    env = {
        "ALERTD_THRESHOLD": "5",
        "ALERTD_COOLDOWN_SECONDS": "60",
        "ALERTD_REDIS_CLUSTER": "true",
        "ALERTD_REDIS_URL": cluster[0].url,
    }
    async with running_daemon(env) as daemon:
        _, status = await daemon.get_json("/v1/status")
        assert status["mode"] == "redis"
        cluster[1].stop()
        for i in range(5):
            code, _ = await daemon.post([{"provider": p, "request_id": f"{p}-{i}"} for p in PROVIDERS])
            assert code == 202
        fired = daemon.logged("alert_fired")
        assert sorted(a["tags"]["provider"] for a in fired) == sorted(PROVIDERS), "no alert is missed"
        assert {a["tags"]["alertd_mode"] for a in fired} == {"fallback"}
        _, status = await daemon.get_json("/v1/status")
        assert status["mode"] == "redis-fallback"
        cluster[1].start()  # same port and nodes file: it rejoins with its slots
        await wait_for_mode(daemon, "redis", within=10)
        code, _ = await daemon.post([{"provider": f"new-{p}", "request_id": "x"} for p in PROVIDERS])
        assert code == 202
        _, one = await daemon.get_json(f"/v1/providers/new-{PROVIDERS[0]}")
        assert (one["mode"], one["failures_total"]) == ("redis", 1)
        assert [line["event"] for line in daemon.log_lines() if line["event"].startswith("backend_")] == [
            "backend_down",
            "backend_up",
        ]


async def test_starts_and_serves_with_no_cluster_node_reachable(tmp_path: Path) -> None:
    # redis-py raises RedisClusterException (not a RedisError) when no node answers: it must mean fallback,
    # not a dead daemon.
    down = RedisServer(tmp_path)  # never started: nothing listens on its port
    env = {"ALERTD_THRESHOLD": "5", "ALERTD_REDIS_CLUSTER": "true", "ALERTD_REDIS_URL": down.url}
    async with running_daemon(env) as daemon:
        await wait_for_mode(daemon, "redis-fallback", within=2.0)
        for i in range(5):
            assert await daemon.post({"provider": "openai", "request_id": f"r{i}"}) == (202, {"accepted": 1})
        [fired] = daemon.logged("alert_fired")
        assert fired["tags"]["alertd_mode"] == "fallback"
        async with daemon.session.get(f"{daemon.metrics}/readyz") as response:
            assert response.status == 200
        # The reconnect task keeps failing (backoff 0.1, 0.2, 0.4 s ...) without taking the daemon down.
        await anyio.sleep(1.0)
        assert (await daemon.get_json("/v1/status"))[1]["mode"] == "redis-fallback"


async def test_every_master_down_then_back(cluster: list[RedisServer]) -> None:
    env = {"ALERTD_THRESHOLD": "5", "ALERTD_REDIS_CLUSTER": "true", "ALERTD_REDIS_URL": cluster[0].url}
    async with running_daemon(env) as daemon:
        await wait_for_mode(daemon, "redis")
        for node in cluster:
            node.stop()
        assert await daemon.post({"provider": "p"}) == (202, {"accepted": 1})
        await wait_for_mode(daemon, "redis-fallback")
        await anyio.sleep(1.0)  # several failed reconnect probes
        assert await daemon.post({"provider": "p"}) == (202, {"accepted": 1})
        assert (await daemon.get_json("/v1/status"))[1]["mode"] == "redis-fallback"
