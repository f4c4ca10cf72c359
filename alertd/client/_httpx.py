"""httpx hooks: response event hooks (5xx) and transports (5xx, connection errors, timeouts).

Imported only when one of the `alertd.client.httpx_*` functions is called: httpx is not a dependency.
httpx's event hooks see responses only, never a failed connection or a timeout; the transports see all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from alertd.client._hooks import Hook, UpstreamRequest

_TIMEOUT = httpx.TimeoutException
_CONNECTION = (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)


def upstream(request: httpx.Request) -> UpstreamRequest:
    """The hooks' view of an httpx request."""
    return UpstreamRequest(request.method, str(request.url), request.url.host, request.url.path, request.headers)


def event_hooks(hook: Hook) -> dict[str, list[Callable[[httpx.Response], Any]]]:
    """`event_hooks` for `httpx.Client`: report 5xx answers."""

    def on_response(response: httpx.Response) -> None:
        hook.answered(lambda: upstream(response.request), response.status_code)

    return {"response": [on_response]}


def async_event_hooks(hook: Hook) -> dict[str, list[Callable[[httpx.Response], Awaitable[None]]]]:
    """`event_hooks` for `httpx.AsyncClient`: report 5xx answers."""
    [sync] = event_hooks(hook)["response"]

    async def on_response(response: httpx.Response) -> None:
        sync(response)

    return {"response": [on_response]}


class ReportingTransport(httpx.BaseTransport):
    """Wraps a transport; reports 5xx answers, connection errors and timeouts, then behaves as the wrapped one."""

    def __init__(self, hook: Hook, wrapped: httpx.BaseTransport) -> None:
        self._hook = hook
        self._wrapped = wrapped

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self._wrapped.handle_request(request)
        except Exception as exc:
            self._hook.raised(lambda: upstream(request), exc, _TIMEOUT, _CONNECTION)
            raise
        self._hook.answered(lambda: upstream(request), response.status_code)
        return response

    def close(self) -> None:
        self._wrapped.close()


class AsyncReportingTransport(httpx.AsyncBaseTransport):
    """The asynchronous `ReportingTransport`, for `httpx.AsyncClient(transport=...)`."""

    def __init__(self, hook: Hook, wrapped: httpx.AsyncBaseTransport) -> None:
        self._hook = hook
        self._wrapped = wrapped

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._wrapped.handle_async_request(request)
        except Exception as exc:
            self._hook.raised(lambda: upstream(request), exc, _TIMEOUT, _CONNECTION)
            raise
        self._hook.answered(lambda: upstream(request), response.status_code)
        return response

    async def aclose(self) -> None:
        await self._wrapped.aclose()
