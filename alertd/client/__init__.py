"""Report failed upstream calls to alertd from a router, in one line, without ever hurting the router.

    from alertd.client import AsyncReporter            # asyncio routers (aiohttp)
    async with AsyncReporter("unix:/var/run/alertd/alertd.sock") as alertd:
        alertd.report("openai", route="/v1/chat/completions", status=503)

    from alertd.client import Reporter                 # threaded routers (Flask, Django): stdlib HTTP
    alertd = Reporter("http://127.0.0.1:9180", token=os.environ.get("ALERTD_INGEST_TOKEN"))
    alertd.report("openai", status=503)

`report()` is synchronous and O(1): it validates the event as alertd would and appends it to a bounded
buffer; a background task (or thread) sends NDJSON batches every 100 ms or at 500 events, retries with
backoff while alertd is down, and drops the oldest events when the buffer is full. No public method
raises; what went wrong is counted in `stats()`.

Hooks report failed calls to providers automatically: `aiohttp_trace_config()` for aiohttp client
sessions; `httpx_transport()` / `httpx_async_transport()` (connection errors, timeouts, 5xx) and
`httpx_event_hooks()` / `httpx_async_event_hooks()` (5xx only) for httpx, which is imported only then.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from alertd.client._async import AsyncReporter
from alertd.client._core import ReporterStats, Target
from alertd.client._hooks import (
    FieldsOf,
    Hook,
    IsFailure,
    ProviderOf,
    SupportsReport,
    UpstreamRequest,
    aiohttp_trace_config,
    provider_by_host,
    route_and_request_id,
    server_error,
)
from alertd.client._sync import Reporter

if TYPE_CHECKING:
    import httpx

__all__ = [
    "AsyncReporter",
    "FieldsOf",
    "IsFailure",
    "ProviderOf",
    "Reporter",
    "ReporterStats",
    "SupportsReport",
    "Target",
    "UpstreamRequest",
    "aiohttp_trace_config",
    "httpx_async_event_hooks",
    "httpx_async_transport",
    "httpx_event_hooks",
    "httpx_transport",
    "provider_by_host",
    "route_and_request_id",
    "server_error",
]


def httpx_event_hooks(
    reporter: SupportsReport,
    *,
    provider_of: ProviderOf = provider_by_host,
    fields_of: FieldsOf = route_and_request_id,
    is_failure: IsFailure = server_error,
) -> dict[str, list[Callable[[httpx.Response], Any]]]:
    """`httpx.Client(event_hooks=...)` that reports 5xx answers.

    httpx's event hooks never see connection errors or timeouts: `httpx_transport` does.
    """
    from alertd.client import _httpx  # noqa: PLC0415 - httpx is optional

    return _httpx.event_hooks(Hook(reporter, provider_of, fields_of, is_failure))


def httpx_async_event_hooks(
    reporter: SupportsReport,
    *,
    provider_of: ProviderOf = provider_by_host,
    fields_of: FieldsOf = route_and_request_id,
    is_failure: IsFailure = server_error,
) -> dict[str, list[Callable[[httpx.Response], Awaitable[None]]]]:
    """`httpx.AsyncClient(event_hooks=...)` that reports 5xx answers."""
    from alertd.client import _httpx  # noqa: PLC0415 - httpx is optional

    return _httpx.async_event_hooks(Hook(reporter, provider_of, fields_of, is_failure))


def httpx_transport(
    reporter: SupportsReport,
    wrapped: httpx.BaseTransport | None = None,
    *,
    provider_of: ProviderOf = provider_by_host,
    fields_of: FieldsOf = route_and_request_id,
    is_failure: IsFailure = server_error,
) -> httpx.BaseTransport:
    """`httpx.Client(transport=...)` that reports connection errors, timeouts and 5xx answers.

    Otherwise it behaves exactly as `wrapped` (a default `httpx.HTTPTransport()` if None).
    """
    import httpx  # noqa: PLC0415 - httpx is optional

    from alertd.client import _httpx  # noqa: PLC0415

    hook = Hook(reporter, provider_of, fields_of, is_failure)
    return _httpx.ReportingTransport(hook, wrapped if wrapped is not None else httpx.HTTPTransport())


def httpx_async_transport(
    reporter: SupportsReport,
    wrapped: httpx.AsyncBaseTransport | None = None,
    *,
    provider_of: ProviderOf = provider_by_host,
    fields_of: FieldsOf = route_and_request_id,
    is_failure: IsFailure = server_error,
) -> httpx.AsyncBaseTransport:
    """`httpx.AsyncClient(transport=...)` that reports connection errors, timeouts and 5xx answers."""
    import httpx  # noqa: PLC0415 - httpx is optional

    from alertd.client import _httpx  # noqa: PLC0415

    hook = Hook(reporter, provider_of, fields_of, is_failure)
    return _httpx.AsyncReportingTransport(hook, wrapped if wrapped is not None else httpx.AsyncHTTPTransport())
