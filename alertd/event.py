"""The failure event model and the decoding of ingest bodies into it.

Decoding is pure: bytes in, validated events out, or an `InvalidEventError` naming the first bad item.
The raw API key is replaced by its anonymized form here, so nothing downstream ever holds it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import msgspec

from alertd.errors import InvalidEventError

JSON = "application/json"
NDJSON = "application/x-ndjson"
CONTENT_TYPES = (JSON, NDJSON)

MAX_PROVIDER_CHARS = 128
# Longer values are rejected, except `message`, which is informational and cut to fit.
MAX_CHARS = {"route": 1024, "request_id": 256, "api_key": 1024, "error_type": 128}
MAX_MESSAGE_CHARS = 1024
# Unicode Default_Ignorable_Code_Point characters that str.isprintable() accepts: they render as nothing,
# so "openai" + one of them would look exactly like "openai" (Unicode 15 DerivedCoreProperties).
_INVISIBLE = re.compile("[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\ufe00-\ufe0f\uffa0\U000e0100-\U000e01ef]")


@dataclass(frozen=True, slots=True)
class FailureEvent:
    """One failed upstream call, as reported by the router. `api_key` holds the anonymized key."""

    provider: str
    route: str | None = None
    request_id: str | None = None
    api_key: str | None = None
    error_type: str | None = None
    status: int | None = None
    message: str | None = None
    timestamp: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The event's set fields, for logs, the Sentry context and the query API."""
        return {name: getattr(self, name) for name in self.__slots__ if getattr(self, name) is not None}


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _loads(data: bytes | str) -> Any:
    if isinstance(data, bytes):
        # Strict UTF-8 (RFC 8259): json.loads(bytes) would also take UTF-16/32 and encoded surrogates.
        data = data.decode("utf-8").removeprefix("\ufeff")
    return json.loads(data, parse_constant=_reject_constant)


class _Wire(msgspec.Struct):
    """An event as msgspec checks it in C: the types and lengths of `parse_event`, nothing looser."""

    provider: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PROVIDER_CHARS)]
    route: Annotated[str, msgspec.Meta(max_length=MAX_CHARS["route"])] | None = None
    request_id: Annotated[str, msgspec.Meta(max_length=MAX_CHARS["request_id"])] | None = None
    api_key: Annotated[str, msgspec.Meta(max_length=MAX_CHARS["api_key"])] | None = None
    error_type: Annotated[str, msgspec.Meta(max_length=MAX_CHARS["error_type"])] | None = None
    status: Annotated[int, msgspec.Meta(ge=100, le=599)] | None = None
    message: str | None = None
    timestamp: Any = None


_WIRE_BODY = msgspec.json.Decoder(_Wire | list[_Wire])
_WIRE_LINE = msgspec.json.Decoder(_Wire)


def decode_valid_events(body: bytes, content_type: str, anonymize: Callable[[str], str]) -> list[FailureEvent] | None:
    """The events of a valid body, decoded and checked by msgspec (strict JSON, strict UTF-8); else None.

    Only a body that the slow path would accept gets through, and it yields the same events; any other
    body (malformed, a BOM, a broken rule) returns None and takes the slow path, which names the error.
    """
    try:
        if content_type == NDJSON:
            wires = [_WIRE_LINE.decode(line) for line in body.split(b"\n") if line.strip()]
        else:
            decoded = _WIRE_BODY.decode(body)
            wires = decoded if isinstance(decoded, list) else [decoded]
        events = []
        for index, wire in enumerate(wires):
            provider = wire.provider
            if not provider.isprintable() or " " in provider or _INVISIBLE.search(provider):
                return None
            key = wire.api_key
            message = wire.message
            events.append(
                FailureEvent(
                    provider=provider,
                    route=wire.route or None,
                    request_id=wire.request_id or None,
                    api_key=anonymize(key) if key else None,
                    error_type=wire.error_type or None,
                    status=wire.status,
                    message=message[:MAX_MESSAGE_CHARS] if message else None,
                    timestamp=None if wire.timestamp is None else _parse_timestamp(wire.timestamp, index),
                )
            )
    except (ValueError, RecursionError, InvalidEventError):  # msgspec.DecodeError is a ValueError
        return None
    return events


def decode_events(body: bytes, content_type: str, anonymize: Callable[[str], str]) -> list[FailureEvent]:
    """Decode a JSON object, a JSON array of objects, or NDJSON into events; all or nothing."""
    fast = decode_valid_events(body, content_type, anonymize)
    return fast if fast is not None else validate_events(body, content_type, anonymize)


def validate_events(body: bytes, content_type: str, anonymize: Callable[[str], str]) -> list[FailureEvent]:
    """Decode and check a body in Python, raising InvalidEventError that names the first broken rule.

    The slow path: `decode_valid_events` takes every valid body first; this one explains the rest.
    """
    if content_type == NDJSON:
        items = _ndjson_items(body)
    else:
        try:
            decoded = _loads(body)
        except (ValueError, RecursionError) as exc:
            raise InvalidEventError("invalid_json", _json_detail(exc)) from None
        items = decoded if isinstance(decoded, list) else [decoded]
    return [parse_event(item, index, anonymize) for index, item in enumerate(items)]


def _ndjson_items(body: bytes) -> list[Any]:
    items: list[Any] = []
    for line in body.split(b"\n"):
        if not line.strip():
            continue
        try:
            items.append(_loads(line))
        except (ValueError, RecursionError) as exc:
            raise InvalidEventError("invalid_json", _json_detail(exc), len(items)) from None
    return items


def _json_detail(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "JSON is nested too deeply"
    if isinstance(exc, UnicodeDecodeError):
        return "body is not valid UTF-8"
    return f"malformed JSON: {exc}"


def parse_event(item: Any, index: int, anonymize: Callable[[str], str]) -> FailureEvent:
    """Validate one decoded item; raises InvalidEventError with `index` on the first broken rule."""
    if not isinstance(item, dict):
        raise InvalidEventError("invalid_event", "each event must be a JSON object", index)
    provider = item.get("provider")
    if not isinstance(provider, str):
        raise InvalidEventError("invalid_event", "provider is required and must be a string", index)
    if not 1 <= len(provider) <= MAX_PROVIDER_CHARS:
        raise InvalidEventError("invalid_event", f"provider must be 1-{MAX_PROVIDER_CHARS} characters", index)
    # isprintable() is False for control, format (zero-width, bidi marks) and separator characters;
    # _INVISIBLE catches the default-ignorable characters it lets through (variation selectors, fillers).
    if not provider.isprintable() or " " in provider or _INVISIBLE.search(provider):
        raise InvalidEventError(
            "invalid_event", "provider must not contain whitespace, control or invisible format characters", index
        )
    fields: dict[str, str | None] = {}
    for name, limit in MAX_CHARS.items():
        value = item.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidEventError("invalid_event", f"{name} must be a string", index)
        if value is not None and len(value) > limit:
            raise InvalidEventError("invalid_event", f"{name} must be at most {limit} characters", index)
        fields[name] = value or None
    message = item.get("message")
    if message is not None and not isinstance(message, str):
        raise InvalidEventError("invalid_event", "message must be a string", index)
    status = item.get("status")
    if isinstance(status, float) and status.is_integer():
        status = int(status)  # JSON has one kind of number: 503.0 is 503, as JSON Schema's "integer" says
    if status is not None and (type(status) is not int or not 100 <= status <= 599):
        raise InvalidEventError("invalid_event", "status must be an integer from 100 to 599", index)
    raw_key = fields["api_key"]
    return FailureEvent(
        provider=provider,
        route=fields["route"],
        request_id=fields["request_id"],
        api_key=None if raw_key is None else anonymize(raw_key),
        error_type=fields["error_type"],
        status=status,
        message=message[:MAX_MESSAGE_CHARS] if message else None,
        timestamp=_parse_timestamp(item.get("timestamp"), index),
    )


def _parse_timestamp(value: Any, index: int) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value) and 0 <= value < 1e11:
            return float(value)
    elif isinstance(value, str) and 0 < len(value) <= 64:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed.timestamp()
    raise InvalidEventError(
        "invalid_event", "timestamp must be epoch seconds or an RFC 3339 string with a UTC offset", index
    )
