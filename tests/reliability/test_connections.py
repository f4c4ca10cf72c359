"""Guarantee 4 (connections): slow clients time out, and thousands of connections meet a bounded limit
and then a clean 503, never a reset or a hang."""

from __future__ import annotations

import json
import time

import anyio
import pytest
from anyio.abc import SocketStream

from tests.reliability.helpers import metric, parse_response
from tests.support.daemon import RunningDaemon, running_daemon

pytestmark = pytest.mark.anyio

HEAD = b"POST /v1/failures HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
EVENT = b'{"provider": "p"}'


def port_of(daemon: RunningDaemon) -> int:
    return int(daemon.api.rsplit(":", 1)[1])


async def read_until_closed(stream: SocketStream, within: float) -> bytes:
    data = b""
    with anyio.fail_after(within):
        try:
            while True:
                data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return data


async def test_slow_headers_are_cut_off_by_the_client_timeout() -> None:
    """Found by this suite: aiohttp's default waits 3630 s for a request head that trickles in."""
    async with running_daemon({"ALERTD_CLIENT_TIMEOUT_SECONDS": "1"}) as daemon:
        stream = await anyio.connect_tcp("127.0.0.1", port_of(daemon))
        closed_after: list[float] = []
        start = time.monotonic()

        async def trickle() -> None:
            try:
                for byte in HEAD * 20:  # 20 s worth at one byte per 50 ms: never completes in time
                    await stream.send(bytes([byte]))
                    await anyio.sleep(0.05)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(trickle)
            await read_until_closed(stream, within=10)
            closed_after.append(time.monotonic() - start)
            tasks.cancel_scope.cancel()
        await stream.aclose()
        assert closed_after[0] < 8  # the timeout is 1 s; generous for a busy machine
        assert await daemon.post({"provider": "p"}) == (202, {"accepted": 1})


async def test_a_silent_connection_is_closed() -> None:
    async with running_daemon({"ALERTD_CLIENT_TIMEOUT_SECONDS": "0.5"}) as daemon:
        stream = await anyio.connect_tcp("127.0.0.1", port_of(daemon))
        assert await read_until_closed(stream, within=8) == b""
        await stream.aclose()


async def read_response(stream: SocketStream, within: float) -> bytes:
    """One whole response (head and Content-Length body), without waiting for the connection to close."""
    data = b""
    with anyio.fail_after(within):
        while True:
            _head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = int(parse_response(data).headers.get("content-length", "0"))
                if len(body) >= length:
                    return data
            data += await stream.receive()


async def test_a_slow_body_gets_408() -> None:
    async with running_daemon({"ALERTD_CLIENT_TIMEOUT_SECONDS": "1"}) as daemon:
        stream = await anyio.connect_tcp("127.0.0.1", port_of(daemon))
        await stream.send(HEAD + b"Content-Length: 1000\r\n\r\n" + b" " * 10)

        async def trickle() -> None:
            try:
                for _ in range(200):
                    await stream.send(b" ")
                    await anyio.sleep(0.05)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(trickle)
            answer = await read_response(stream, within=8)
            tasks.cancel_scope.cancel()
        await stream.aclose()
        response = parse_response(answer)
        assert response.status == 408
        assert json.loads(response.body)["error"] == "incomplete_body"
        assert metric(await daemon.scrape(), "alertd_ingest_rejected_total", reason="incomplete_body") == 1


async def test_thousands_of_connections_meet_a_bounded_limit_then_a_clean_503() -> None:
    limit, crowd = 50, 2000
    async with running_daemon({"ALERTD_MAX_CONNECTIONS": str(limit), "ALERTD_LOG_LEVEL": "info"}) as daemon:
        port = port_of(daemon)
        holders = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(limit)]
        # Each holder sends a request and keeps its keep-alive connection: the limit is now reached.
        for holder in holders:
            await holder.send(HEAD + b"Content-Length: %d\r\n\r\n" % len(EVENT) + EVENT)
            assert (await holder.receive()).startswith(b"HTTP/1.1 202")
        statuses: list[int] = []
        bodies: list[bytes] = []
        limiter = anyio.CapacityLimiter(1000)  # 1000 connections in flight at once

        async def knock() -> None:
            async with limiter:
                stream = await anyio.connect_tcp("127.0.0.1", port)
                await stream.send(HEAD + b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(EVENT) + EVENT)
                response = parse_response(await read_until_closed(stream, within=30))
                await stream.aclose()
                statuses.append(response.status)
                bodies.append(response.body)

        async with anyio.create_task_group() as tasks:
            for _ in range(crowd):
                tasks.start_soon(knock)
        assert statuses == [503] * crowd  # every one answered, none reset, none served past the limit
        assert {json.loads(body)["error"] for body in bodies} == {"too_many_connections"}
        text = await daemon.scrape()
        assert metric(text, "alertd_ingest_rejected_total", reason="too_many_connections") == crowd
        assert metric(text, "alertd_failures_total", provider="p") == limit
        for holder in holders:
            await holder.aclose()
        with anyio.fail_after(10):
            while True:  # the holders' slots free up as the server notices they are gone
                status, _ = await daemon.post({"provider": "p"})
                if status == 202:
                    break
                await anyio.sleep(0.05)
