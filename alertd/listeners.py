"""Listening sockets: binding TCP and Unix addresses, and a site that caps its connections."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import Callable
from typing import cast

from aiohttp import web

from alertd.config import Address, ListenAddress, UnixAddress
from alertd.errors import ListenError

BACKLOG = 1024


def bind(variable: str, address: ListenAddress, socket_mode: int = 0o660) -> socket.socket:
    """A listening socket for `address`; raises ListenError naming `variable`."""
    if isinstance(address, UnixAddress):
        return _bind_unix(variable, address, socket_mode)
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    try:
        return socket.create_server((address.host, address.port), family=family, backlog=BACKLOG)
    except OSError as exc:
        raise ListenError(variable, str(address), exc.strerror or str(exc)) from None


def _bind_unix(variable: str, address: UnixAddress, mode: int) -> socket.socket:
    path = address.path
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise ListenError(variable, str(address), "the path exists and is not a socket")
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # stale: left behind by a process that is gone
            else:
                raise ListenError(variable, str(address), "another process is listening on this socket")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ListenError(variable, str(address), exc.strerror or str(exc)) from None
    return sock


_REFUSAL_BODY = (
    b'{"error": "too_many_connections", "detail": "alertd has ALERTD_MAX_CONNECTIONS connections open; retry"}'
)
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY
)
# How long a refused connection may take to send its request head, then to close after the answer.
REFUSAL_GRACE = 1.0


class _Refusal(asyncio.Protocol):
    """A connection over the limit: read the request head, answer 503, half-close, then close.

    Reading before answering and half-closing after keep the client from seeing a reset instead of the 503.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._tail = b""
        self._answered = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)
        self._timer = self._loop.call_later(REFUSAL_GRACE, self._answer)

    def data_received(self, data: bytes) -> None:
        if not self._answered:
            self._tail = (self._tail + data)[-4096:]
            if b"\r\n\r\n" in self._tail:
                self._answer()

    def eof_received(self) -> bool:
        self._answer()
        return False  # the client is done: close once the answer is flushed

    def _answer(self) -> None:
        transport = self._transport
        if self._answered or transport is None or transport.is_closing():
            return
        self._answered = True
        if self._timer is not None:
            self._timer.cancel()
        transport.write(REFUSAL)
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = self._loop.call_later(REFUSAL_GRACE, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None


class LimitedSite(web.SockSite):
    """A SockSite that serves at most `limit` connections at once and answers the rest 503."""

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, *, limit: int, on_refused: Callable[[], None]):
        super().__init__(runner, sock, backlog=BACKLOG)
        self._limit = limit
        self._on_refused = on_refused
        self._opening = 0  # connections created whose handler has not registered with the server yet

    async def start(self) -> None:
        """Like SockSite.start, with a protocol factory that enforces the limit."""
        await web.BaseSite.start(self)  # registers the site with its runner
        loop = asyncio.get_running_loop()
        server = self._runner.server
        if server is None:
            raise RuntimeError("the runner is not set up")

        def settled() -> None:
            self._opening -= 1

        def factory() -> asyncio.BaseProtocol:
            if len(server.connections) + self._opening >= self._limit:
                self._on_refused()
                return _Refusal(loop)
            # The handler registers in connection_made, which the transport schedules right after this
            # returns: two hops of call_soon land after it.
            self._opening += 1
            loop.call_soon(loop.call_soon, settled)
            return server()

        self._server = await loop.create_server(factory, sock=self._sock, backlog=self._backlog)


def bound(sock: socket.socket) -> Address:
    """The address a TCP socket is bound to (the real port when port 0 was asked for)."""
    host, port = sock.getsockname()[:2]
    return Address(host, port)


def bound_listen(sock: socket.socket, configured: ListenAddress) -> ListenAddress:
    """The address ALERTD_LISTEN ended up on: the Unix path as configured, or the bound TCP address."""
    return configured if isinstance(configured, UnixAddress) else bound(sock)
