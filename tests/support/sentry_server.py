"""A loopback Sentry: a real HTTP server that accepts envelopes, decodes br/gzip/plain bodies and
parses them with `sentry_sdk.envelope.Envelope.deserialize`. It can also misbehave on purpose."""

from __future__ import annotations

import gzip
import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import brotli
from aiohttp import web
from sentry_sdk.envelope import Envelope

PUBLIC_KEY = "0123456789abcdef0123456789abcdef"
PROJECT_ID = 42


@dataclass
class Behaviour:
    """How the server answers: a status and headers, after an optional delay; `hang` never answers."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hang: bool = False


class LoopbackSentry:
    """Collects every envelope it receives; `events` holds the error events among them."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.events: list[dict[str, Any]] = []
        self.auth_headers: list[str] = []
        self.raw_bodies: list[bytes] = []
        self.encodings: list[str] = []
        self.behaviour = Behaviour()
        self.port = 0
        self._arrived = anyio.Event()

    @property
    def dsn(self) -> str:
        """The DSN that points the SDK at this server."""
        return f"http://{PUBLIC_KEY}@127.0.0.1:{self.port}/{PROJECT_ID}"

    async def handle(self, request: web.Request) -> web.Response:
        """Receive one envelope."""
        raw = await request.read()
        encoding = request.headers.get("Content-Encoding", "")
        if encoding == "br":
            body = brotli.decompress(raw)
        elif encoding == "gzip":
            body = gzip.decompress(raw)
        else:
            body = raw
        envelope = Envelope.deserialize(body)
        self.raw_bodies.append(body)
        self.encodings.append(encoding)
        self.auth_headers.append(request.headers.get("X-Sentry-Auth", ""))
        behaviour = self.behaviour
        if behaviour.hang:
            await anyio.sleep_forever()
        if behaviour.delay:
            await anyio.sleep(behaviour.delay)
        self.envelopes.append(envelope)
        if 200 <= behaviour.status < 300:
            for item in envelope.items:
                if item.type == "event":
                    event = item.get_event()
                    assert event is not None
                    self.events.append(dict(event))
        self._arrived.set()
        self._arrived = anyio.Event()
        return web.json_response(
            {"id": envelope.headers.get("event_id")}, status=behaviour.status, headers=behaviour.headers
        )

    async def wait_for_events(self, count: int, within: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least `count` events have arrived; fail the test after `within` seconds."""
        with anyio.fail_after(within):
            while len(self.events) < count:
                await self._arrived.wait()
        return self.events

    async def wait_for_envelopes(self, count: int, within: float = 10.0) -> list[Envelope]:
        """Wait until at least `count` envelopes were answered."""
        with anyio.fail_after(within):
            while len(self.envelopes) < count:
                await self._arrived.wait()
        return self.envelopes


SentryT = TypeVar("SentryT", bound=LoopbackSentry)


def loopback_sentry() -> AbstractAsyncContextManager[LoopbackSentry]:
    """Run a LoopbackSentry on 127.0.0.1 with a free port."""
    return serve_sentry(LoopbackSentry())


@asynccontextmanager
async def serve_sentry(sentry: SentryT) -> AsyncIterator[SentryT]:
    """Run `sentry` (a LoopbackSentry, or a subclass of it) on 127.0.0.1 with a free port."""
    app = web.Application(client_max_size=50 * 1024 * 1024)
    app.router.add_post("/api/{project}/envelope/", sentry.handle)
    # The SDK compresses (br when Brotli is importable, else gzip): decode it here, not in aiohttp.
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.1, auto_decompress=False)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    sentry.port = sock.getsockname()[1]
    await web.SockSite(runner, sock).start()
    try:
        yield sentry
    finally:
        await runner.cleanup()
