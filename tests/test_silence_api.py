"""The silences API over real HTTP: an aiohttp app with add_silence_routes on 127.0.0.1, a wall clock moved by hand."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from alertd.answers import CONFIG
from alertd.api import _errors
from alertd.config import Config
from alertd.logs import make_logger
from alertd.silence_api import MAX_SILENCE_BODY_BYTES, add_silence_routes
from alertd.silences import MemorySilences, SilenceStore
from tests.support.daemon import FakeClock

pytestmark = pytest.mark.anyio

START = 1_800_000_000.0  # 2027-01-15T08:00:00Z
TOKEN = "silence-test-token"


@dataclass
class SilenceServer:
    """A running app serving the silences API, its store and its wall clock."""

    url: str
    clock: FakeClock
    store: SilenceStore
    backend: MemorySilences
    session: aiohttp.ClientSession
    log_stream: io.StringIO
    token: str | None

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.token is None else {"Authorization": f"Bearer {self.token}"}

    async def call(
        self, method: str, path: str, body: Any = None, *, data: bytes | None = None, auth: bool = True
    ) -> tuple[int, Any, Mapping[str, str]]:
        """One request; the answer's status, JSON body (None when empty) and headers."""
        payload = data if data is not None else None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(self.headers if auth else {})}
        async with self.session.request(method, f"{self.url}{path}", data=payload, headers=headers) as response:
            raw = await response.read()
            return response.status, json.loads(raw) if raw else None, response.headers

    async def add(self, **body: Any) -> dict[str, Any]:
        status, answer, _ = await self.call("POST", "/v1/silences", {"comment": "maintenance", **body})
        assert status == 201, answer
        assert isinstance(answer, dict)
        return answer

    async def listing(self) -> list[dict[str, Any]]:
        status, answer, _ = await self.call("GET", "/v1/silences")
        assert status == 200, answer
        assert isinstance(answer["silences"], list)
        return answer["silences"]

    def logged(self, event: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.log_stream.getvalue().splitlines()]
        return [line for line in lines if line["event"] == event]


@asynccontextmanager
async def silence_server(
    token: str | None = TOKEN, max_active: int = 1000, unix_path: str | None = None
) -> AsyncIterator[SilenceServer]:
    """The silences API as make_app serves it (same middleware, same CONFIG) on a real socket at 127.0.0.1.

    With `unix_path`, also on that Unix socket.
    """
    env = {"ALERTD_LISTEN": "127.0.0.1:0", **({} if token is None else {"ALERTD_INGEST_TOKEN": token})}
    config = Config.from_environ(env)
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[_errors])
    app[CONFIG] = config
    clock = FakeClock(START)
    store = SilenceStore(max_active=max_active)
    backend = MemorySilences(store, clock)
    stream = io.StringIO()
    add_silence_routes(app, backend, clock, make_logger(stream=stream, secrets=config.secrets))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        if unix_path is not None:
            await web.UnixSite(runner, unix_path).start()
        async with aiohttp.ClientSession() as session:
            yield SilenceServer(f"http://127.0.0.1:{port}", clock, store, backend, session, stream, token)
    finally:
        await runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[SilenceServer]:
    async with silence_server() as running:
        yield running


async def test_add_answers_201_with_a_top_level_id_and_lists_it(server: SilenceServer) -> None:
    created = await server.add(providers="openai", duration_seconds=3600, created_by="alice")
    assert len(created["id"]) == 32
    int(created["id"], 16)
    assert created == {
        "id": created["id"],
        "providers": "openai",
        "comment": "maintenance",
        "created_by": "alice",
        "created_at": "2027-01-15T08:00:00.000Z",
        "ends_at": "2027-01-15T09:00:00.000Z",
        "active": True,
        "expired_at": None,
    }
    assert await server.listing() == [created]
    [line] = server.logged("silence_created")
    assert line["silence_id"] == created["id"]
    assert line["providers"] == "openai"
    assert line["created_by"] == "alice"


async def test_ends_at_is_taken_as_given(server: SilenceServer) -> None:
    created = await server.add(providers="bedrock-*", ends_at="2027-01-15T10:30:00+01:00")
    assert created["ends_at"] == "2027-01-15T09:30:00.000Z"
    assert created["created_by"] is None
    server.clock.advance(5399)
    assert (await server.backend.covering("bedrock-eu")) is not None
    server.clock.advance(1)
    assert (await server.backend.covering("bedrock-eu")) is None


async def test_a_glob_covers_several_providers_and_nothing_else(server: SilenceServer) -> None:
    wide = await server.add(providers="bedrock-*", duration_seconds=600)
    for provider in ("bedrock-us", "bedrock-eu", "bedrock-"):
        covering = await server.backend.covering(provider)
        assert covering is not None
        assert covering.id == wide["id"]
    for provider in ("bedrock", "Bedrock-us", "openai", "xbedrock-us"):
        assert await server.backend.covering(provider) is None


async def test_expire_answers_204_and_the_silence_stays_listed_for_an_hour(server: SilenceServer) -> None:
    created = await server.add(providers="openai", duration_seconds=7200)
    server.clock.advance(10)
    status, body, _ = await server.call("DELETE", f"/v1/silences/{created['id']}")
    assert (status, body) == (204, None)
    [listed] = await server.listing()
    assert listed["active"] is False
    assert listed["expired_at"] == "2027-01-15T08:00:10.000Z"
    assert await server.backend.covering("openai") is None
    assert [line["silence_id"] for line in server.logged("silence_expired")] == [created["id"]]
    # Expiring it again is harmless while it is listed, and keeps the first expiry time.
    status, _, _ = await server.call("DELETE", f"/v1/silences/{created['id']}")
    assert status == 204
    assert (await server.listing())[0]["expired_at"] == "2027-01-15T08:00:10.000Z"
    server.clock.advance(3599)
    assert len(await server.listing()) == 1
    server.clock.advance(1)
    assert await server.listing() == []
    status, body, _ = await server.call("DELETE", f"/v1/silences/{created['id']}")
    assert status == 404
    assert body["error"] == "not_found"


async def test_a_silence_ends_by_time_and_is_dropped_an_hour_later(server: SilenceServer) -> None:
    created = await server.add(providers="openai", duration_seconds=60)
    server.clock.advance(59.9)
    assert (await server.listing())[0]["active"] is True
    assert await server.backend.covering("openai") is not None
    server.clock.advance(0.1)
    [ended] = await server.listing()
    assert ended["id"] == created["id"]
    assert ended["active"] is False
    assert ended["expired_at"] is None
    assert await server.backend.covering("openai") is None
    server.clock.advance(3600)
    assert await server.listing() == []


async def test_unknown_id_is_404(server: SilenceServer) -> None:
    status, body, _ = await server.call("DELETE", "/v1/silences/0123456789abcdef0123456789abcdef")
    assert status == 404
    assert body["error"] == "not_found"
    assert body["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ("openai", "body"),
        ({"comment": "c", "duration_seconds": 60}, "providers"),
        ({"providers": "", "comment": "c", "duration_seconds": 60}, "providers"),
        ({"providers": "open ai", "comment": "c", "duration_seconds": 60}, "providers"),
        ({"providers": 5, "comment": "c", "duration_seconds": 60}, "providers"),
        ({"providers": "p", "duration_seconds": 60}, "comment"),
        ({"providers": "p", "comment": "", "duration_seconds": 60}, "comment"),
        ({"providers": "p", "comment": " \n", "duration_seconds": 60}, "comment"),
        ({"providers": "p", "comment": "c", "duration_seconds": 60, "created_by": 7}, "created_by"),
        ({"providers": "p", "comment": "c"}, "ends_at"),
        ({"providers": "p", "comment": "c", "duration_seconds": 60, "ends_at": "2027-01-15T09:00:00Z"}, "ends_at"),
        ({"providers": "p", "comment": "c", "ends_at": "tomorrow"}, "ends_at"),
        ({"providers": "p", "comment": "c", "ends_at": "2027-01-15T09:00:00"}, "ends_at"),
        ({"providers": "p", "comment": "c", "ends_at": "2027-01-15T07:59:59Z"}, "ends_at"),
        ({"providers": "p", "comment": "c", "ends_at": 1_900_000_000}, "ends_at"),
        ({"providers": "p", "comment": "c", "duration_seconds": -5}, "duration_seconds"),
        ({"providers": "p", "comment": "c", "duration_seconds": 0}, "duration_seconds"),
        ({"providers": "p", "comment": "c", "duration_seconds": "60"}, "duration_seconds"),
        ({"providers": "p", "comment": "c", "duration_seconds": True}, "duration_seconds"),
    ],
)
async def test_bad_input_is_400_naming_the_field(server: SilenceServer, body: Any, field: str) -> None:
    status, answer, _ = await server.call("POST", "/v1/silences", body)
    assert status == 400, answer
    assert answer["error"] == "invalid_silence"
    assert answer["field"] == field
    assert field in answer["detail"]
    assert await server.listing() == []


@pytest.mark.parametrize(
    "data", [b"{", b"", b"\xff\xfe\xfa", b"[" * 50_000, b'{"providers": "p", "comment": "c", "duration_seconds": NaN}']
)
async def test_malformed_json_is_400_naming_the_body(server: SilenceServer, data: bytes) -> None:
    status, answer, _ = await server.call("POST", "/v1/silences", data=data)
    assert status == 400
    assert answer["error"] == "invalid_silence"
    assert answer["field"] in ("body", "duration_seconds")
    assert await server.listing() == []


async def test_a_body_over_64_kib_is_413(server: SilenceServer) -> None:
    big = {"providers": "p", "comment": "c" * MAX_SILENCE_BODY_BYTES, "duration_seconds": 60}
    status, answer, _ = await server.call("POST", "/v1/silences", big)
    assert status == 413
    assert answer["error"] == "body_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # chunked: no Content-Length to judge by
        for _ in range(3):
            yield b" " * 32 * 1024

    headers = {"Content-Type": "application/json", **server.headers}
    async with server.session.post(f"{server.url}/v1/silences", data=chunks(), headers=headers) as response:
        assert response.status == 413
    assert await server.listing() == []


async def test_token_is_required_for_every_route() -> None:
    async with silence_server() as server:
        created = await server.add(providers="p", duration_seconds=60)
        for method, path in (
            ("POST", "/v1/silences"),
            ("GET", "/v1/silences"),
            ("DELETE", f"/v1/silences/{created['id']}"),
        ):
            body = {"providers": "q", "comment": "c", "duration_seconds": 60}
            status, answer, headers = await server.call(method, path, body, auth=False)
            assert status == 401
            assert answer["error"] == "unauthorized"
            assert headers["WWW-Authenticate"] == 'Bearer realm="alertd"'
            async with server.session.request(
                method, f"{server.url}{path}", json=body, headers={"Authorization": "Bearer wrong"}
            ) as response:
                assert response.status == 401
        [listed] = await server.listing()
        assert listed["active"] is True
        assert listed["providers"] == "p"


async def test_no_token_configured_needs_no_header() -> None:
    async with silence_server(token=None) as server:
        created = await server.add(providers="p", duration_seconds=60)
        assert [s["id"] for s in await server.listing()] == [created["id"]]


async def test_other_methods_are_405_naming_the_allowed_ones(server: SilenceServer) -> None:
    status, answer, headers = await server.call("PUT", "/v1/silences", {})
    assert status == 405
    assert answer["error"] == "method_not_allowed"
    assert set(headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}
    status, answer, headers = await server.call("GET", "/v1/silences/abc")
    assert status == 405
    assert headers["Allow"] == "DELETE"


async def test_too_many_active_silences_is_409_until_one_ends() -> None:
    async with silence_server(max_active=2) as server:
        first = await server.add(providers="a", duration_seconds=60)
        await server.add(providers="b", duration_seconds=600)
        status, answer, _ = await server.call(
            "POST", "/v1/silences", {"providers": "c", "comment": "c", "duration_seconds": 60}
        )
        assert status == 409
        assert answer["error"] == "too_many_silences"
        assert "2" in answer["detail"]
        status, _, _ = await server.call("DELETE", f"/v1/silences/{first['id']}")
        assert status == 204
        await server.add(providers="c", duration_seconds=60)
