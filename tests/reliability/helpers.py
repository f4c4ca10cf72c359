"""Shared helpers of the reliability suite: metric parsing, a raw HTTP client, RSS, waiting."""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import anyio
import psutil
from anyio.abc import ByteReceiveStream

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of metric `name` in a Prometheus text exposition, with its labels."""
    found = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match["name"] == name:
            labels = dict(_LABEL.findall(match["labels"] or ""))
            found.append((labels, float(match["value"])))
    return found


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample of `name` with exactly these labels, or None."""
    for got, value in samples(text, name):
        if got == labels:
            return value
    return None


def metric_sum(text: str, name: str) -> float:
    """The sum of every sample of `name`."""
    return sum(value for _, value in samples(text, name))


def outcomes(text: str) -> dict[str, float]:
    """alertd_sentry_events_total by outcome."""
    return {labels["outcome"]: value for labels, value in samples(text, "alertd_sentry_events_total")}


async def read_all(stream: ByteReceiveStream | None) -> str:
    """Everything left on a child's output stream, decoded."""
    data = b""
    if stream is not None:
        with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError):
            while True:
                data += await stream.receive()
    return data.decode("utf-8", "replace")


def rss_mib(pid: int) -> float:
    """Resident set size of process `pid`, in MiB."""
    return float(psutil.Process(pid).memory_info().rss) / (1024 * 1024)


async def wait_until(check: Callable[[], Awaitable[bool]], within: float = 10.0, every: float = 0.05) -> None:
    """Poll `check` (a client's view of the daemon) until it is true; fail after `within` seconds."""
    with anyio.fail_after(within):
        while not await check():  # noqa: ASYNC110 - a client polling the daemon from outside
            await anyio.sleep(every)


@dataclass(frozen=True)
class RawResponse:
    """An HTTP response read off a raw socket; status 0 means the server closed without answering."""

    status: int
    headers: dict[str, str]
    body: bytes


def raw_request(
    port: int,
    *,
    method: bytes = b"POST",
    path: bytes = b"/v1/failures",
    headers: Mapping[bytes, bytes] | None = None,
    body: bytes = b"",
    timeout: float = 10.0,
    content_length: bool = True,
) -> RawResponse:
    """Send exactly these bytes as one HTTP/1.1 request (Connection: close) and read the answer.

    Blocking: call it from a worker thread when the daemon runs in the same event loop.
    """
    head = [method + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    head += [name + b": " + value for name, value in (headers or {}).items()]
    if content_length:
        head.append(b"Content-Length: " + str(len(body)).encode())
    data = b"\r\n".join(head) + b"\r\n\r\n" + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return parse_response(received)


def parse_response(received: bytes) -> RawResponse:
    """Parse one HTTP/1.x response (the body is whatever follows the head)."""
    if not received:
        return RawResponse(0, {}, b"")
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(int(status_line.split(" ")[1]), headers, body)
