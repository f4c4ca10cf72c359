"""What every API route shares: the JSON error answer and the bearer-token check (ALERTD_INGEST_TOKEN)."""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web

from alertd.config import Config

CONFIG = web.AppKey("config", Config)


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
