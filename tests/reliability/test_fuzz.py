"""Guarantee 4 (fuzz): random bodies and headers over real HTTP never get a 5xx, and alertd keeps serving."""

from __future__ import annotations

import gzip
import json
import zlib
from collections import Counter
from typing import Any

import brotli
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.helpers import raw_request
from tests.support.daemon import running_daemon

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
FIELDS = ["provider", "route", "request_id", "api_key", "error_type", "status", "message", "timestamp"]
EVENTS = st.fixed_dictionaries(
    {"provider": st.text(min_size=1, max_size=20) | JSON_VALUES},
    optional={name: JSON_VALUES | st.text(max_size=300) for name in FIELDS[1:]},
)


def _encode(events: Any, ndjson: bool) -> bytes:
    if ndjson and isinstance(events, list):
        return "\n".join(json.dumps(e) for e in events).encode()
    return json.dumps(events).encode()


BODIES = st.one_of(
    st.binary(max_size=2000),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.builds(_encode, EVENTS | st.lists(EVENTS, max_size=8), st.booleans()),
    st.builds(
        lambda b, cut: b[:cut], st.builds(_encode, st.lists(EVENTS, max_size=4), st.booleans()), st.integers(0, 200)
    ),
)
CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/x-ndjson", "application/json; charset=utf-8", "text/plain", "", "application/*"]
) | st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40)
ENCODINGS = st.sampled_from([None, "gzip", "deflate", "br", "identity", "zstd", "gzip, br", "x-unknown"])
HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "host", "expect", "upgrade", "te", "trailer"}
HEADER_NAMES = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz-ABCXYZ0123456789"), min_size=1, max_size=20).filter(
    lambda name: name.lower() not in HOP_BY_HOP
)
HEADER_VALUES = st.binary(max_size=60).map(lambda v: v.replace(b"\r", b"").replace(b"\n", b""))


def compress(body: bytes, encoding: str | None, really: bool) -> bytes:
    if not really or encoding is None:
        return body
    if encoding == "gzip":
        return gzip.compress(body)
    if encoding == "deflate":
        return zlib.compress(body)
    if encoding == "br":
        return bytes(brotli.compress(body))
    return body


def test_random_requests_never_get_a_5xx_and_the_daemon_keeps_serving() -> None:
    seen: Counter[int] = Counter()
    env = {"ALERTD_THRESHOLD": "3", "ALERTD_CLIENT_TIMEOUT_SECONDS": "2", "ALERTD_LOG_LEVEL": "info"}
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(running_daemon(env)) as daemon:
        port = int(daemon.api.rsplit(":", 1)[1])

        @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(
            method=st.sampled_from([b"POST"] * 8 + [b"GET", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD"]),
            path=st.sampled_from(
                [b"/v1/failures"] * 8 + [b"/v1/providers", b"/v1/providers/x", b"/", b"/v1/failures/"]
            ),
            body=BODIES,
            content_type=CONTENT_TYPES,
            encoding=ENCODINGS,
            really_compressed=st.booleans(),
            extra=st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=4),
        )
        def check(
            *,
            method: bytes,
            path: bytes,
            body: bytes,
            content_type: str,
            encoding: str | None,
            really_compressed: bool,
            extra: dict[str, bytes],
        ) -> None:
            headers = {name.encode(): value for name, value in extra.items()}
            headers[b"Content-Type"] = content_type.encode("latin-1")
            if encoding is not None:
                headers[b"Content-Encoding"] = encoding.encode()
            data = compress(body, encoding, really_compressed)
            response = raw_request(port, method=method, path=path, headers=headers, body=data)
            seen[response.status] += 1
            assert 200 <= response.status < 500, (response.status, response.body[:300])

        check()
        # Still serving, and nothing was an internal error.
        response = raw_request(port, headers={b"Content-Type": b"application/json"}, body=b'{"provider": "p"}')
        assert response.status == 202
        assert daemon.logged("internal_error") == []
    assert seen[202] > 0
    assert seen[400] > 0
