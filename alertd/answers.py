"""What every API route shares: the JSON error answer, the bearer-token check (ALERTD_INGEST_TOKEN), reading a body."""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Callable
from typing import Any

import anyio
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from alertd.config import Config

CONFIG = web.AppKey("config", Config)

# Builds the answer to a body `read_body` refuses: (request, error, status, detail) -> the JSON error answer.
BodyError = Callable[[web.Request, str, int, str], web.Response]


def error_response(status: int, error: str, detail: str, **extra: Any) -> web.Response:
    """The JSON body every error answer carries."""
    return web.json_response({"error": error, "detail": detail, **extra}, status=status)


def authorized(request: web.Request) -> bool:
    """True when ALERTD_INGEST_TOKEN is unset or the request carries it as a bearer token."""
    token = request.app[CONFIG].ingest_token
    if token is None:
        return True
    given = request.headers.get("Authorization", "")
    # surrogateescape: a header byte that is not UTF-8 is a mismatch, not an error.
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), f"Bearer {token}".encode())


def unauthorized() -> web.Response:
    """The 401 answer, with the WWW-Authenticate challenge."""
    response = error_response(401, "unauthorized", "a valid 'Authorization: Bearer <token>' header is required")
    response.headers["WWW-Authenticate"] = 'Bearer realm="alertd"'
    return response


def body_error(request: web.Request, error: str, status: int, detail: str) -> web.Response:
    """A `BodyError` that only answers: `error_response(status, error, detail)`."""
    return error_response(status, error, detail)


async def read_body(
    request: web.Request, limit: int, too_large: str, on_error: BodyError, *, own_limit: bool
) -> bytes | web.Response:
    """The whole (inflated) body, or ON_ERROR's answer when it is too large, late, cut off or undecodable.

    A Content-Length over LIMIT is refused (413, TOO_LARGE) before anything is read. Then, with OWN_LIMIT false,
    LIMIT must be the application's client_max_size: aiohttp's `request.read()` enforces it, and a body that
    came whole with the headers is read without a timer. With OWN_LIMIT true, LIMIT (below client_max_size) is
    counted here over the inflated chunks, under the timer, and a body past it closes the connection.
    """
    if request.content_length is not None and request.content_length > limit:
        return on_error(request, "body_too_large", 413, too_large)
    timeout = request.app[CONFIG].client_timeout_seconds
    try:
        # A body that came whole with the headers (the usual small POST) needs no timer: anyio.fail_after's
        # cancel scope cost ~10% of the CPU of a single-event request.
        eof = not own_limit and request.content.is_eof()
        with contextlib.nullcontext() if eof else anyio.fail_after(timeout):
            return await (_read_up_to(request, limit, too_large, on_error) if own_limit else request.read())
    except web.HTTPRequestEntityTooLarge:
        return on_error(request, "body_too_large", 413, too_large)
    except TimeoutError:
        late = f"the body did not arrive within ALERTD_CLIENT_TIMEOUT_SECONDS ({timeout:g}s)"
        response = on_error(request, "incomplete_body", 408, late)
        response.force_close()  # the rest of a late body is not worth waiting for: close, do not linger
        return response
    except ConnectionError:
        return on_error(request, "incomplete_body", 400, "the client closed the connection before the body arrived")
    except (RequestPayloadError, HttpProcessingError):
        # A body that does not decompress as its Content-Encoding says: the client's fault, not ours.
        return on_error(request, "invalid_body", 400, "the body could not be decoded as its Content-Encoding says")


async def _read_up_to(request: web.Request, limit: int, too_large: str, on_error: BodyError) -> bytes | web.Response:
    """The body, counted over its inflated chunks; past LIMIT, ON_ERROR's 413, and the connection closes."""
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            response = on_error(request, "body_too_large", 413, too_large)
            response.force_close()  # the rest of the body is not worth reading
            return response
    return bytes(body)
