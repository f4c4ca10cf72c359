"""The request bodies every stage sends: realistic router failures, spread over providers and API keys."""

from __future__ import annotations

import json
from typing import Any

BATCH_EVENTS = 1000


def event(i: int, *, providers: int = 50, keys: int = 200, prefix: str = "provider") -> dict[str, Any]:
    """The i-th failure: provider i % providers, API key i % keys (the same fields as bench/wrk/ingest.lua)."""
    return {
        "provider": f"{prefix}-{i % providers:02d}",
        "route": "/v1/chat/completions",
        "request_id": f"req-{i:06d}",
        "api_key": f"sk-live-{i % keys:016d}",
        "error_type": "upstream_unavailable",
        "status": 503,
        "message": "upstream answered 503 Service Unavailable",
    }


def events(
    count: int, *, start: int = 0, providers: int = 50, keys: int = 200, prefix: str = "provider"
) -> list[dict[str, Any]]:
    """`count` consecutive failures from `start`."""
    return [event(i, providers=providers, keys=keys, prefix=prefix) for i in range(start, start + count)]


def json_array(items: list[dict[str, Any]]) -> bytes:
    """A JSON array body."""
    return json.dumps(items, separators=(",", ":")).encode()


def ndjson(items: list[dict[str, Any]]) -> bytes:
    """An NDJSON body."""
    return b"".join(json.dumps(item, separators=(",", ":")).encode() + b"\n" for item in items)
