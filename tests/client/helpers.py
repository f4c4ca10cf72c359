"""Helpers of the client tests: alertd's counts, free ports, and servers that misbehave on purpose."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress

import anyio
from anyio.abc import SocketStream

from alertd.client import ReporterStats
from tests.support.daemon import RunningDaemon


def failures(daemon: RunningDaemon, provider: str) -> int:
    """alertd_failures_total{provider}: events alertd recorded (readable after the daemon stopped too)."""
    value = daemon.registry.get_sample_value("alertd_failures_total", {"provider": provider})
    return 0 if value is None else int(value)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def balanced(stats: ReporterStats) -> bool:
    """Every reported event is accounted for exactly once."""
    return stats.reported == stats.sent + stats.dropped + stats.queued + stats.in_flight


async def until(predicate: Callable[[], bool], within: float = 10.0, step: float = 0.02) -> None:
    """Wait for `predicate`; fail after `within` seconds (a hang guard, not a speed requirement)."""
    with anyio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - the condition lives in another thread or process
            await anyio.sleep(step)


@asynccontextmanager
async def silent_server() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A TCP server on 127.0.0.1 that accepts, reads the request and never answers: a hung alertd.

    Yields its port and the bytes it received so far.
    """
    received: list[bytes] = []

    async def handle(stream: SocketStream) -> None:
        async with stream:
            with suppress(anyio.BrokenResourceError, anyio.EndOfStream):
                async for chunk in stream:
                    received.append(chunk)  # noqa: PERF401 - seen by the test while the stream is open

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - anyio, not Django
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, handle)
        yield port, received
        tasks.cancel_scope.cancel()
