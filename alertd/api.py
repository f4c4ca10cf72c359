"""The HTTP edge: the ingest and query API, and the metrics and health endpoints."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from alertd.anonymizer import Anonymizer
from alertd.answers import CONFIG, authorized, error_response, read_body, unauthorized
from alertd.config import Config
from alertd.errors import InvalidEventError
from alertd.event import CONTENT_TYPES, decode_valid_events, validate_events
from alertd.service import AlertService
from alertd.silence_api import add_silence_routes

FAILURES_PATH = "/v1/failures"
# Invalid bodies above this are checked in a worker thread (the Python validator takes ~0.1 s for 1 MiB).
DECODE_INLINE_BYTES = 64 * 1024


@dataclass(slots=True)
class Health:
    """What /readyz reports: ready once both listeners are up, not ready while draining."""

    ready: bool = False
    draining: bool = False


SERVICE = web.AppKey("service", AlertService)
ANONYMIZER = web.AppKey("anonymizer", Anonymizer)
HEALTH = web.AppKey("health", Health)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _reject(request: web.Request, reason: str, status: int, detail: str, **extra: Any) -> web.Response:
    service = request.app[SERVICE]
    service.metrics.rejected.labels(reason).inc()
    service.log.debug("ingest_rejected", reason=reason, detail=detail, status=status, **extra)
    return error_response(status, reason, detail, **extra)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every error in JSON; report unexpected ones instead of leaking a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = exc.reason.lower().replace(" ", "_")
        if request.path == FAILURES_PATH and exc.status == 405:
            response = _reject(request, "method_not_allowed", 405, f"{request.method} is not allowed; use POST")
        else:
            response = error_response(exc.status, error, exc.text or exc.reason)
        if "Allow" in exc.headers:  # RFC 9110: a 405 names the methods the resource offers
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception as exc:
        service = request.app[SERVICE]
        service.log.exception("internal_error", path=request.path)
        service.sink.report_exception(exc)
        return error_response(500, "internal_error", "alertd failed to handle the request; see its log")


async def post_failures(request: web.Request) -> web.Response:
    """POST /v1/failures: record one event, a JSON array of events, or NDJSON."""
    if not authorized(request):
        request.app[SERVICE].metrics.rejected.labels("unauthorized").inc()
        return unauthorized()
    if request.content_type not in CONTENT_TYPES:
        return _reject(
            request,
            "unsupported_media_type",
            415,
            f"Content-Type must be one of {', '.join(CONTENT_TYPES)}",
        )
    limit = request.app[CONFIG].max_body_bytes
    too_large = f"the body is over ALERTD_MAX_BODY_BYTES ({limit} bytes)"
    body = await read_body(request, limit, too_large, _reject, own_limit=False)
    if isinstance(body, web.Response):
        return body
    anonymize = request.app[ANONYMIZER].anonymize
    content_type = request.content_type
    try:
        # A valid body is decoded and checked in C (a 1 MiB batch in ~12 ms): inline.
        events = decode_valid_events(body, content_type, anonymize)
        if events is None:
            # Anything else goes through the Python validator, which names the error. It takes ~0.1 s for
            # 1 MiB: a large body is checked in a worker thread, and the GIL's switch interval keeps the
            # event loop answering meanwhile.
            slow = partial(validate_events, body, content_type, anonymize)
            events = await anyio.to_thread.run_sync(slow) if len(body) > DECODE_INLINE_BYTES else slow()
    except InvalidEventError as exc:
        extra = {} if exc.index is None else {"index": exc.index}
        return _reject(request, exc.code, 400, exc.detail, **extra)
    await request.app[SERVICE].ingest(events)
    return web.json_response({"accepted": len(events)}, status=202)


async def get_providers(request: web.Request) -> web.Response:
    """GET /v1/providers: every tracked provider's figures."""
    if not authorized(request):
        return unauthorized()
    service = request.app[SERVICE]
    stats = await service.tracker.all_stats()
    mode = service.tracker.status()["mode"]
    return web.json_response({"mode": mode, "providers": [await service.describe(s) for s in stats]})


async def get_provider(request: web.Request) -> web.Response:
    """GET /v1/providers/{provider}: one provider's figures, 404 if it is not tracked."""
    if not authorized(request):
        return unauthorized()
    service = request.app[SERVICE]
    stats = await service.tracker.stats(request.match_info["provider"])
    mode = service.tracker.status()["mode"]
    if stats is None:
        return error_response(404, "not_found", "this provider is not tracked (no recent failures)", mode=mode)
    return web.json_response({"mode": mode, **(await service.describe(stats))})


async def get_status(request: web.Request) -> web.Response:
    """GET /v1/status: the mode (`memory`, `redis` or `redis-fallback`) and the backend's details."""
    if not authorized(request):
        return unauthorized()
    return web.json_response(request.app[SERVICE].tracker.status())


async def get_rules(request: web.Request) -> web.Response:
    """GET /v1/rules: the rules in force, with their effective values."""
    if not authorized(request):
        return unauthorized()
    rules = request.app[SERVICE].rules
    if rules is None:  # only before the daemon has loaded them
        return error_response(503, "not_ready", "the rules are not loaded yet")
    return web.json_response(rules.to_json())


def make_app(service: AlertService, config: Config, anonymizer: Anonymizer) -> web.Application:
    """The ingest and query API (ALERTD_LISTEN)."""
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[_errors])
    app[SERVICE] = service
    app[CONFIG] = config
    app[ANONYMIZER] = anonymizer
    app.router.add_post(FAILURES_PATH, post_failures)
    app.router.add_get("/v1/providers", get_providers)
    app.router.add_get("/v1/providers/{provider}", get_provider)
    app.router.add_get("/v1/status", get_status)
    app.router.add_get("/v1/rules", get_rules)
    add_silence_routes(app, service.silences, service.wall_clock, log=service.log)
    return app


async def get_metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format."""
    body = generate_latest(request.app[SERVICE].metrics.registry)
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def get_healthz(request: web.Request) -> web.Response:
    """GET /healthz: 200 while the process runs."""
    return web.json_response({"status": "ok"})


async def get_readyz(request: web.Request) -> web.Response:
    """GET /readyz: 200 once both listeners are up, 503 while starting or draining."""
    health = request.app[HEALTH]
    if health.ready and not health.draining:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "draining" if health.draining else "starting"}, status=503)


def make_metrics_app(service: AlertService, health: Health) -> web.Application:
    """/metrics, /healthz and /readyz (ALERTD_METRICS_LISTEN)."""
    app = web.Application(middlewares=[_errors])
    app[SERVICE] = service
    app[HEALTH] = health
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/readyz", get_readyz)
    return app
