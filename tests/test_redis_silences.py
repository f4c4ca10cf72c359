"""RedisSilences against a real redis-server on 127.0.0.1: cluster mode's API silences, shared by every pod."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from redis.asyncio import Redis, RedisCluster

from alertd.answers import CONFIG
from alertd.api import _errors
from alertd.config import Config
from alertd.errors import BackendUnavailableError, SilenceLimitError
from alertd.redis_silences import RedisSilences
from alertd.silence_api import add_silence_routes
from alertd.silences import Silence
from tests.conftest import require_tool
from tests.support.daemon import FakeClock
from tests.support.redis_server import RedisServer, redis_cluster, redis_server

pytestmark = pytest.mark.anyio

START = 1_800_000_000.0  # 2027-01-15T08:00:00Z
KEY = "{alertd:}silences"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as running:
        yield running


class Pods:
    """RedisSilences objects, each with its own client (as pods have), sharing a wall clock and a monotonic one."""

    def __init__(self, url: str, stack: AsyncExitStack) -> None:
        self.url = url
        self.stack = stack
        self.wall = FakeClock(START)
        self.mono = FakeClock(1000.0)

    async def client(self) -> Redis:
        client = Redis.from_url(self.url)
        self.stack.push_async_callback(client.aclose)
        return client

    async def pod(self, **options: Any) -> RedisSilences:
        options.setdefault("timeout", 0.5)
        return RedisSilences(await self.client(), wall_clock=self.wall, clock=self.mono, **options)

    def later(self, seconds: float = 1.0) -> None:
        """Let `seconds` pass on both clocks (a copy older than 1 s is read again)."""
        self.wall.advance(seconds)
        self.mono.advance(seconds)


@asynccontextmanager
async def pods_on(url: str) -> AsyncIterator[Pods]:
    async with AsyncExitStack() as stack:
        yield Pods(url, stack)


@pytest.fixture
async def pods(server: RedisServer) -> AsyncIterator[Pods]:
    async with pods_on(server.url) as running:
        yield running


async def stored(pods: Pods) -> dict[str, dict[str, Any]]:
    """What Redis holds under the key, silences only, decoded."""
    raw = await (await pods.client()).hgetall(KEY)
    fields = {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
    return {k: json.loads(v) for k, v in fields.items() if k != "version"}


async def test_add_list_expire_and_covering(pods: Pods) -> None:
    pod = await pods.pod()
    bedrock = await pod.add("bedrock-*", START + 3600, "AWS maintenance", "alice")
    pods.later(0.5)
    everything = await pod.add("*", START + 600, "a short one for all", None)
    assert bedrock == Silence(bedrock.id, "bedrock-*", "AWS maintenance", "alice", START, START + 3600)
    assert len(bedrock.id) == 32
    assert await pod.listing() == [bedrock, everything]
    # Stored under the prefix, as the exact state (epoch seconds), one hash for all.
    assert await stored(pods) == {bedrock.id: bedrock.to_state(), everything.id: everything.to_state()}
    # Glob covering; when several cover, the one ending last wins.
    assert await pod.covering("bedrock-eu") == bedrock
    assert await pod.covering("openai") == everything
    assert await pod.expire(bedrock.id) is True
    assert await pod.covering("bedrock-eu") == everything
    assert await pod.expire("0" * 32) is False
    pods.later(600)  # `everything` ends by time
    assert await pod.covering("bedrock-eu") is None
    assert await pod.covering("openai") is None
    [expired, ended] = await pod.listing()
    assert expired.id == bedrock.id
    assert expired.expired_at == START + 0.5
    assert expired.active(pods.wall()) is False
    assert ended == everything
    assert ended.active(pods.wall()) is False
    # Expiring an ended silence still listed changes nothing and says so.
    assert await pod.expire(bedrock.id) is True
    assert (await stored(pods))[bedrock.id]["expired_at"] == START + 0.5


async def test_ended_silences_are_listed_for_an_hour_then_dropped_from_redis(pods: Pods) -> None:
    pod = await pods.pod()
    short = await pod.add("openai", START + 60, "a minute", None)
    pods.later(60 + 3599)
    assert [s.id for s in await pod.listing()] == [short.id]
    pods.later(1)
    assert await pod.listing() == []
    # The next change removes it from the hash too.
    other = await pod.add("anthropic", pods.wall() + 60, "another", None)
    assert set(await stored(pods)) == {other.id}


async def test_the_limit_on_active_silences_holds(pods: Pods) -> None:
    pod = await pods.pod(max_active=3)
    made = [await pod.add(f"p{i}", START + 3600, "x", None) for i in range(3)]
    with pytest.raises(SilenceLimitError):
        await pod.add("p3", START + 3600, "x", None)
    assert len(await stored(pods)) == 3
    await pod.expire(made[0].id)
    await pod.add("p3", START + 3600, "x", None)
    assert len(await pod.listing()) == 4  # 3 active, 1 ended (still listed)


async def test_the_limit_holds_across_pods_adding_at_once(pods: Pods) -> None:
    # Ten adds at once from two pods (interleaved reads and writes on one loop): exactly five fit.
    first, second = await pods.pod(max_active=5), await pods.pod(max_active=5)
    outcomes: list[str] = []

    async def add(pod: RedisSilences, i: int) -> None:
        try:
            await pod.add(f"p{i}", START + 3600, "x", None)
            outcomes.append("made")
        except SilenceLimitError:
            outcomes.append("refused")

    async with anyio.create_task_group() as tasks:
        for i in range(10):
            tasks.start_soon(add, first if i % 2 else second, i)
    assert sorted(outcomes) == ["made"] * 5 + ["refused"] * 5
    assert len(await stored(pods)) == 5
    assert len(await first.listing()) == 5


async def test_two_pods_see_each_others_silences(pods: Pods) -> None:
    one, two = await pods.pod(), await pods.pod()
    assert await two.covering("openai") is None  # two has read: nothing yet
    made = await one.add("open*", START + 3600, "incident #42", "bob")
    # two answers from its copy for up to a second, then reads Redis again.
    assert await two.covering("openai") is None
    pods.later()
    assert await two.covering("openai") == made
    assert await two.listing() == [made]
    assert await two.expire(made.id) is True
    expired_at = pods.wall()
    pods.later()
    assert await one.covering("openai") is None
    [listed] = await one.listing()
    assert listed.expired_at == expired_at


async def test_a_hung_redis_keeps_the_last_copy_for_covering_and_refuses_changes(
    server: RedisServer, pods: Pods
) -> None:
    pod = await pods.pod(timeout=0.2)
    made = await pod.add("bedrock-*", START + 3600, "AWS maintenance", None)
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)  # accepts nothing, answers nothing
    try:
        pods.later()
        # The refresh times out: the silence read before still holds.
        assert await pod.covering("bedrock-eu") == made
        assert await pod.covering("openai") is None
        for call in (
            lambda: pod.add("openai", START + 3600, "x", None),
            lambda: pod.expire(made.id),
            pod.listing,
        ):
            with pytest.raises(BackendUnavailableError) as caught:
                await call()
            assert caught.value.reason == "timeout"
            assert "ALERTD_REDIS_TIMEOUT_SECONDS (0.2s)" in str(caught.value)
        # A pod that never read Redis silences nothing: its alerts go out.
        fresh = await pods.pod(timeout=0.2)
        assert await fresh.covering("bedrock-eu") is None
        # The copy still ends when the silence does.
        pods.later(3600)
        assert await pod.covering("bedrock-eu") is None
    finally:
        server.process.send_signal(signal.SIGCONT)
    # Back: changes go through, and covering reads Redis again.
    other = await pods.pod()
    again = await other.add("bedrock-*", pods.wall() + 3600, "still maintenance", None)
    pods.later()
    assert await pod.covering("bedrock-eu") == again


async def test_a_stopped_redis_is_a_connection_error(server: RedisServer, pods: Pods) -> None:
    pod = await pods.pod()
    server.stop()
    with pytest.raises(BackendUnavailableError) as caught:
        await pod.add("openai", START + 3600, "x", None)
    assert caught.value.reason == "connection"
    assert await pod.covering("openai") is None


async def test_while_cluster_mode_is_down_covering_does_not_read(pods: Pods) -> None:
    up = [True]
    reader = await pods.pod(backend_up=lambda: up[0])
    writer = await pods.pod()
    made = await writer.add("openai", START + 3600, "x", None)
    up[0] = False
    pods.later()
    assert await reader.covering("openai") is None  # not read: the (empty) copy answers
    up[0] = True
    assert await reader.covering("openai") == made


async def test_a_flushed_script_is_loaded_again(pods: Pods) -> None:
    pod = await pods.pod()
    await pod.add("openai", START + 3600, "x", None)
    await (await pods.client()).script_flush()
    await pod.add("anthropic", START + 3600, "x", None)
    assert len(await stored(pods)) == 2


async def test_a_damaged_entry_is_ignored_then_dropped(pods: Pods) -> None:
    client = await pods.client()
    await client.hset(KEY, "junk", "{not json")
    pod = await pods.pod()
    assert await pod.listing() == []
    assert await pod.covering("openai") is None
    made = await pod.add("openai", START + 3600, "x", None)
    assert await stored(pods) == {made.id: made.to_state()}


async def test_the_prefix_names_the_key(pods: Pods) -> None:
    pod = await pods.pod(prefix="alertd:api-router:")
    await pod.add("openai", START + 3600, "x", None)
    client = await pods.client()
    assert sorted(await client.keys()) == [b"{alertd:api-router:}silences"]
    assert await (await pods.pod()).listing() == []  # another prefix, other silences


@asynccontextmanager
async def api_on(backend: RedisSilences, wall: Callable[[], float]) -> AsyncIterator[str]:
    config = Config.from_environ({"ALERTD_LISTEN": "127.0.0.1:0"})
    app = web.Application(middlewares=[_errors])
    app[CONFIG] = config
    add_silence_routes(app, backend, wall)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1/silences"
    finally:
        await runner.cleanup()


async def test_the_api_answers_503_while_redis_is_down(server: RedisServer, pods: Pods) -> None:
    pod = await pods.pod(timeout=0.2)
    async with api_on(pod, pods.wall) as url, aiohttp.ClientSession() as session:
        body = {"providers": "openai", "duration_seconds": 60, "comment": "x"}
        async with session.post(url, json=body) as response:
            assert response.status == 201
            made = await response.json()
        server.stop()
        for method, path, payload in (("POST", url, body), ("GET", url, None), ("DELETE", f"{url}/{made['id']}", None)):
            async with session.request(method, path, json=payload) as response:
                assert response.status == 503, method
                answer = await response.json()
                assert answer["error"] == "backend_unavailable"
                assert answer["reason"] == "connection"
                assert "retry" in answer["detail"]


async def test_on_a_redis_cluster(tmp_path: Path) -> None:
    require_tool("redis-cli")
    with redis_cluster(tmp_path) as nodes:
        client = RedisCluster.from_url(nodes[0].url)
        try:
            wall, mono = FakeClock(START), FakeClock(1000.0)
            one = RedisSilences(client, wall_clock=wall, clock=mono, timeout=2.0)
            two = RedisSilences(client, wall_clock=wall, clock=mono, timeout=2.0)
            made = await one.add("bedrock-*", START + 3600, "AWS maintenance", None)
            assert await two.covering("bedrock-eu") == made
            assert await two.expire(made.id) is True
            assert [s.expired_at for s in await one.listing()] == [START]
            # The key lives on one master (the one serving its slot).
            cli = require_tool("redis-cli")
            holders = []
            for node in nodes:
                found = await anyio.run_process([cli, "-p", str(node.port), "EXISTS", KEY])
                if found.stdout.strip() == b"1":
                    holders.append(node.port)
            assert len(holders) == 1
        finally:
            await client.aclose()


# What docs/SILENCES.md says the Redis user needs for silences.
SILENCES_ACL = (
    "resetkeys ~{alertd:* resetchannels -@all +hgetall +hget +hset +hdel +hincrby +evalsha +script|load +hello"
)


async def acl_user(server: RedisServer, name: str, acl: str) -> str:
    command = [
        require_tool("redis-cli"),
        "-p",
        str(server.port),
        "ACL",
        "SETUSER",
        name,
        "on",
        ">acl-pw-7",
        *acl.split(),
    ]
    result = await anyio.run_process(command)
    assert result.stdout.strip() == b"OK"
    return f"redis://{name}:acl-pw-7@127.0.0.1:{server.port}/0"


async def test_the_documented_commands_are_enough(server: RedisServer) -> None:
    async with pods_on(await acl_user(server, "silences", SILENCES_ACL)) as pods:
        pod = await pods.pod()
        short = await pod.add("openai", START + 60, "x", None)
        await pod.expire(short.id)
        pods.later(3600 + 60)
        other = await pods.pod()
        pods.later()
        assert await other.covering("openai") is None
        await pod.add("anthropic", pods.wall() + 60, "x", None)  # drops the old one: HDEL inside the script
        assert [s.providers for s in await other.listing()] == ["anthropic"]
    # Without +hdel, that same change is refused: the list above is not longer than it must be.
    async with pods_on(await acl_user(server, "no-hdel", SILENCES_ACL.replace(" +hdel", ""))) as pods:
        pod = await pods.pod()
        pods.wall.now = START + 3 * 3600  # "anthropic" ended over an hour ago: the add deletes it
        with pytest.raises(BackendUnavailableError) as caught:
            await pod.add("mistral", pods.wall() + 60, "x", None)
        assert caught.value.reason in {"auth", "response"}
