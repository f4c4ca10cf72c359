"""The silences API: `POST /v1/silences`, `GET /v1/silences`, `DELETE /v1/silences/{id}` (docs/SILENCES.md).

Behind the same bearer token as ingest. The handlers reach silences through a `SilenceBackend`, async so
that a store shared in Redis (cluster mode) fits as well as this process's `MemorySilences`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from aiohttp import web
from structlog.typing import FilteringBoundLogger

from alertd.answers import authorized, body_error, error_response, read_body, unauthorized
from alertd.errors import BackendUnavailableError, InvalidSilenceError, SilenceLimitError
from alertd.silences import SilenceBackend, parse_silence_request

SILENCES_PATH = "/v1/silences"
MAX_SILENCE_BODY_BYTES = 64 * 1024


SILENCES = web.AppKey[SilenceBackend]("silences")
WALL_CLOCK = web.AppKey[Callable[[], float]]("silences_wall_clock")
SILENCE_LOG = web.AppKey[FilteringBoundLogger | None]("silences_log")


def _invalid(field: str, detail: str) -> web.Response:
    return error_response(400, "invalid_silence", detail, field=field)


def _unavailable(exc: BackendUnavailableError) -> web.Response:
    """503: the shared store (Redis, in cluster mode) did not answer; `reason` says how."""
    return error_response(503, "backend_unavailable", str(exc), reason=exc.reason)


def _parse_json(body: bytes) -> object | web.Response:
    try:
        return json.loads(body)  # type: ignore[no-any-return]
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return _invalid("body", "body is not valid JSON")


async def post_silence(request: web.Request) -> web.Response:
    """POST /v1/silences: create a silence; 201 with its id."""
    if not authorized(request):
        return unauthorized()
    too_large = f"a silence request is at most {MAX_SILENCE_BODY_BYTES} bytes"
    raw = await read_body(request, MAX_SILENCE_BODY_BYTES, too_large, body_error, own_limit=True)
    body = raw if isinstance(raw, web.Response) else _parse_json(raw)
    if isinstance(body, web.Response):
        return body
    now = request.app[WALL_CLOCK]()
    try:
        providers, ends_at, comment, created_by = parse_silence_request(body, now)
    except InvalidSilenceError as exc:
        return _invalid(exc.field, str(exc))
    try:
        silence = await request.app[SILENCES].add(providers, ends_at, comment, created_by)
    except SilenceLimitError as exc:
        return error_response(409, "too_many_silences", str(exc))
    except BackendUnavailableError as exc:
        return _unavailable(exc)
    log = request.app[SILENCE_LOG]
    if log is not None:
        log.info(
            "silence_created",
            silence_id=silence.id,
            providers=silence.providers,
            ends_at=silence.to_json(now)["ends_at"],
            created_by=silence.created_by,
            comment=silence.comment,
        )
    return web.json_response(silence.to_json(now), status=201)


async def list_silences(request: web.Request) -> web.Response:
    """GET /v1/silences: the active silences and those that ended in the last hour."""
    if not authorized(request):
        return unauthorized()
    now = request.app[WALL_CLOCK]()
    try:
        silences = await request.app[SILENCES].listing()
    except BackendUnavailableError as exc:
        return _unavailable(exc)
    return web.json_response({"silences": [s.to_json(now) for s in silences]})


async def delete_silence(request: web.Request) -> web.Response:
    """DELETE /v1/silences/{id}: expire a silence now; 204, or 404 for an unknown id."""
    if not authorized(request):
        return unauthorized()
    silence_id = request.match_info["id"]
    try:
        expired = await request.app[SILENCES].expire(silence_id)
    except BackendUnavailableError as exc:
        return _unavailable(exc)
    if not expired:
        return error_response(404, "not_found", "no such silence (or it ended over an hour ago)")
    log = request.app[SILENCE_LOG]
    if log is not None:
        log.info("silence_expired", silence_id=silence_id)
    return web.Response(status=204)


def add_silence_routes(
    app: web.Application,
    backend: SilenceBackend,
    wall_clock: Callable[[], float] = time.time,
    log: FilteringBoundLogger | None = None,
) -> None:
    """Serve the silences API on `app` (which holds CONFIG, for the token); `log` gets who silenced what."""
    app[SILENCES] = backend
    app[WALL_CLOCK] = wall_clock
    app[SILENCE_LOG] = log
    app.router.add_post(SILENCES_PATH, post_silence)
    app.router.add_get(SILENCES_PATH, list_silences)
    app.router.add_delete(f"{SILENCES_PATH}/{{id}}", delete_silence)
