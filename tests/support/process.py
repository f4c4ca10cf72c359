"""Run the real `alertd` command in a child process and read its JSON log lines."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from alertd.config import Address, ListenAddress, parse_listen

COMMAND = [sys.executable, "-m", "alertd"]


def child_env(env: Mapping[str, str]) -> dict[str, str]:
    """The parent's environment without ALERTD_/SENTRY_ settings, plus `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ALERTD_", "SENTRY_"))}
    return {**base, "ALERTD_LISTEN": "127.0.0.1:0", "ALERTD_METRICS_LISTEN": "127.0.0.1:0", **env}


@dataclass
class Child:
    """A running `alertd serve` and every line it has printed."""

    process: Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    api: ListenAddress | None = None
    metrics: Address | None = None
    _changed: anyio.Event = field(default_factory=anyio.Event)

    async def pump(self) -> None:
        """Read stdout into `lines` until it closes."""
        assert self.process.stdout is not None
        buffer = ""
        async for chunk in TextReceiveStream(self.process.stdout):
            buffer += chunk
            *complete, buffer = buffer.split("\n")
            for line in complete:
                self.raw.append(line)
                if line.startswith("{"):
                    parsed = json.loads(line)
                    self.lines.append(parsed)
                    if parsed.get("event") == "alertd_started":
                        self.api = parse_listen(parsed["listen"])
                        self.metrics = Address.from_string(parsed["metrics_listen"])
            self._changed.set()
            self._changed = anyio.Event()
        self._changed.set()

    async def wait_for(self, event: str, within: float = 10.0) -> dict[str, Any]:
        """The first log line with this event, waiting for it if need be."""
        with anyio.fail_after(within):
            while True:
                for line in self.lines:
                    if line.get("event") == event:
                        return line
                await self._changed.wait()

    async def wait_for_count(self, event: str, count: int, within: float = 10.0) -> list[dict[str, Any]]:
        """The log lines with this event, once there are at least `count` of them."""
        with anyio.fail_after(within):
            while len(found := [line for line in self.lines if line.get("event") == event]) < count:
                await self._changed.wait()
        return found

    @property
    def api_url(self) -> str:
        """Base URL of the API listener."""
        assert isinstance(self.api, Address)
        return f"http://127.0.0.1:{self.api.port}"

    @property
    def metrics_url(self) -> str:
        """Base URL of the metrics listener."""
        assert self.metrics is not None
        return f"http://127.0.0.1:{self.metrics.port}"


@asynccontextmanager
async def alertd_serve(env: Mapping[str, str]) -> AsyncIterator[Child]:
    """Start `alertd serve`, wait until it logs alertd_started; kill it on exit if still running."""
    async with await anyio.open_process([*COMMAND, "serve"], env=child_env(env)) as process:
        child = Child(process)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(child.pump)
            try:
                await child.wait_for("alertd_started")
                yield child
            finally:
                if process.returncode is None:
                    process.kill()
                await process.wait()
