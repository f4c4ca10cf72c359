"""Run a real alertd in the test's event loop, on real sockets, and talk to it over HTTP."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
from prometheus_client import CollectorRegistry

from alertd.config import Address, Config
from alertd.daemon import Listening, SinkFactory, serve
from alertd.logs import make_logger

BASE_ENV = {"ALERTD_LISTEN": "127.0.0.1:0", "ALERTD_METRICS_LISTEN": "127.0.0.1:0", "ALERTD_LOG_LEVEL": "debug"}


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


@dataclass
class RunningDaemon:
    """A started alertd and an HTTP session to reach it."""

    config: Config
    listening: Listening
    session: aiohttp.ClientSession
    log_stream: io.StringIO
    registry: CollectorRegistry

    @property
    def api(self) -> str:
        """Base URL of the ingest and query API."""
        assert isinstance(self.listening.api, Address)
        return f"http://127.0.0.1:{self.listening.api.port}"

    @property
    def metrics(self) -> str:
        """Base URL of the metrics listener."""
        return f"http://127.0.0.1:{self.listening.metrics.port}"

    async def post(
        self, body: Any, *, content_type: str = "application/json", headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """POST /v1/failures; `body` is JSON-encoded unless it is bytes."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        all_headers = {"Content-Type": content_type, **(headers or {})}
        async with self.session.post(f"{self.api}/v1/failures", data=data, headers=all_headers) as response:
            return response.status, await response.json()

    async def get_json(self, path: str, headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
        """GET a JSON document from the API listener."""
        async with self.session.get(f"{self.api}{path}", headers=headers) as response:
            return response.status, await response.json()

    async def scrape(self) -> str:
        """GET /metrics."""
        async with self.session.get(f"{self.metrics}/metrics") as response:
            assert response.status == 200
            return await response.text()

    def log_lines(self) -> list[dict[str, Any]]:
        """Every log line so far, parsed."""
        return [json.loads(line) for line in self.log_stream.getvalue().splitlines() if line.strip()]

    def logged(self, event: str) -> list[dict[str, Any]]:
        """The log lines whose event is `event`."""
        return [line for line in self.log_lines() if line["event"] == event]

    async def wait_logged(self, event: str, count: int = 1, within: float = 10.0) -> list[dict[str, Any]]:
        """The log lines whose event is `event`, once there are at least `count` of them."""
        with anyio.fail_after(within):
            # The log is a StringIO: there is nothing to wait on but time.
            while len(found := self.logged(event)) < count:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        return found


@asynccontextmanager
async def running_daemon(
    env: Mapping[str, str] | None = None,
    *,
    clock: Callable[[], float] | None = None,
    make_sink: SinkFactory | None = None,
) -> AsyncIterator[RunningDaemon]:
    """Start alertd with `env` over BASE_ENV; cancel it (a graceful drain) on exit."""
    config = Config.from_environ({**BASE_ENV, **(env or {})})
    stream = io.StringIO()
    log = make_logger(config.log_level, config.log_format, stream=stream, secrets=config.secrets)
    registry = CollectorRegistry()
    kwargs: dict[str, Any] = {"registry": registry, "make_sink": make_sink}
    if clock is not None:
        kwargs["clock"] = clock
    async with aiohttp.ClientSession() as session, anyio.create_task_group() as tasks:
        listening = await tasks.start(_serve, config, log, kwargs)
        yield RunningDaemon(config, listening, session, stream, registry)
        tasks.cancel_scope.cancel()


async def _serve(config: Config, log: Any, kwargs: dict[str, Any], *, task_status: Any) -> None:
    await serve(config, log, task_status=task_status, **kwargs)
