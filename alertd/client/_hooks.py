# ruff: noqa: BLE001 - no exception may reach the router: each is counted in stats() instead
"""Automatic reporting of failed calls to providers: an aiohttp TraceConfig (httpx hooks are in _httpx)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from yarl import URL

from alertd.event import MAX_CHARS


class SupportsReport(Protocol):
    """What the hooks need of a reporter: `AsyncReporter` and `Reporter` both fit."""

    def report(
        self,
        provider: str,
        *,
        route: str | None = None,
        request_id: str | None = None,
        api_key: str | None = None,
        error_type: str | None = None,
        status: int | None = None,
        message: str | None = None,
    ) -> bool:
        """Queue one failure."""
        ...


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """The call to a provider that failed, as the hooks' functions see it."""

    method: str
    url: str
    host: str
    path: str
    headers: Mapping[str, str]


ProviderOf = Callable[[UpstreamRequest], "str | None"]
"""The provider of a request, or None to leave the request unreported."""
FieldsOf = Callable[[UpstreamRequest], "Mapping[str, str | None]"]
"""Extra fields of the report: any of route, request_id, api_key."""
IsFailure = Callable[[int], bool]
"""Which answered statuses count as failures."""
ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]


def provider_by_host(request: UpstreamRequest) -> str | None:
    """The default provider: the request's host name (`api.openai.com`)."""
    return request.host or None


def server_error(status: int) -> bool:
    """The default failure rule: any 5xx answer."""
    return 500 <= status <= 599


def route_and_request_id(request: UpstreamRequest) -> dict[str, str | None]:
    """The default extra fields: the upstream path as `route`, and `X-Request-Id` if the call carried one."""
    request_id = request.headers.get("X-Request-Id")
    return {
        "route": request.path[: MAX_CHARS["route"]] or None,
        "request_id": request_id[: MAX_CHARS["request_id"]] if request_id else None,
    }


@dataclass(frozen=True, slots=True)
class Hook:
    """The reporting logic shared by every hook; each call never raises."""

    reporter: SupportsReport
    provider_of: ProviderOf
    fields_of: FieldsOf
    is_failure: IsFailure

    def answered(self, request: Callable[[], UpstreamRequest], status: int) -> None:
        """A provider answered `status`; `request` builds the request's description."""
        try:
            if self.is_failure(status):
                self._report(request(), f"upstream_{status // 100}xx", status, None)
        except Exception as exc:
            _count(self.reporter, exc)

    def raised(
        self,
        request: Callable[[], UpstreamRequest],
        exc: BaseException,
        timeout: ExceptionTypes,
        connection: ExceptionTypes,
    ) -> None:
        """A call to a provider raised `exc`: timeouts and connection errors are reported, nothing else."""
        try:
            if not isinstance(exc, Exception) or isinstance(exc, asyncio.CancelledError):
                return  # cancellation (the router gave up) is not the provider's failure
            if isinstance(exc, timeout):
                self._report(request(), "timeout", None, exc)
            elif isinstance(exc, connection):
                self._report(request(), "connection_error", None, exc)
        except Exception as error:
            _count(self.reporter, error)

    def _report(self, request: UpstreamRequest, error_type: str, status: int | None, exc: BaseException | None) -> None:
        provider = self.provider_of(request)
        if provider is None:
            return
        fields = self.fields_of(request)
        message = None if exc is None else (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        self.reporter.report(
            provider,
            route=fields.get("route"),
            request_id=fields.get("request_id"),
            api_key=fields.get("api_key"),
            error_type=error_type,
            status=status,
            message=message,
        )


def _count(reporter: SupportsReport, exc: Exception) -> None:
    count = getattr(reporter, "_count_error", None)
    if callable(count):
        count(exc)


def _from_yarl(method: str, url: URL, headers: Mapping[str, str]) -> UpstreamRequest:
    return UpstreamRequest(method, str(url), url.host or "", url.path, headers)


def aiohttp_trace_config(
    reporter: SupportsReport,
    *,
    provider_of: ProviderOf = provider_by_host,
    fields_of: FieldsOf = route_and_request_id,
    is_failure: IsFailure = server_error,
) -> aiohttp.TraceConfig:
    """A TraceConfig for `aiohttp.ClientSession(trace_configs=[...])` that reports failed provider calls.

    Every call ending in a connection error, a timeout or a 5xx answer (`is_failure` decides which
    statuses) is reported. `provider_of` names the provider from the request (its host by default;
    None skips the request).

    Cancellation is not a failure and is never reported. The hooks never raise into the request.
    """
    hook = Hook(reporter, provider_of, fields_of, is_failure)
    trace = aiohttp.TraceConfig()

    async def on_end(session: aiohttp.ClientSession, context: object, params: aiohttp.TraceRequestEndParams) -> None:
        hook.answered(lambda: _from_yarl(params.method, params.url, params.headers), params.response.status)

    async def on_exception(
        session: aiohttp.ClientSession, context: object, params: aiohttp.TraceRequestExceptionParams
    ) -> None:
        hook.raised(
            lambda: _from_yarl(params.method, params.url, params.headers),
            params.exception,
            TimeoutError,
            (aiohttp.ClientConnectionError, ConnectionError),
        )

    trace.on_request_end.append(on_end)
    trace.on_request_exception.append(on_exception)
    return trace
