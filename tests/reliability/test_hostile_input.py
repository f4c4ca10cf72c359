"""Guarantee 4: hostile input gets a clear 4xx with a reason, never a 5xx, a crash or unbounded memory.

tests/test_api.py already covers plain malformed JSON, a bad UTF-8 byte, escaped NUL, `[` * 50000, the
size limit by length, by stream and after gzip inflation. This module adds the rest of the issue's list.
"""

from __future__ import annotations

import functools
import json
import os
import time
import zlib
from functools import partial

import anyio
import brotli
import pytest

from tests.reliability.helpers import metric, raw_request, rss_mib, wait_until
from tests.support.daemon import RunningDaemon, running_daemon

pytestmark = pytest.mark.anyio

NDJSON = "application/x-ndjson"


def port_of(daemon: RunningDaemon) -> int:
    return int(daemon.api.rsplit(":", 1)[1])


async def assert_healthy(daemon: RunningDaemon) -> None:
    """The daemon still accepts an event and logged no internal error."""
    assert await daemon.post({"provider": "health-check"}) == (202, {"accepted": 1})
    assert daemon.logged("internal_error") == []


@pytest.mark.parametrize(
    ("body", "content_type", "error", "index"),
    [
        pytest.param(b'{"provider": "p\x00"}', "application/json", "invalid_json", None, id="raw-nul-in-string"),
        pytest.param(b"\x00\x00\x00", "application/json", "invalid_json", None, id="nul-bytes"),
        pytest.param(b'{"provider": "\xc0\xaf"}', "application/json", "invalid_json", None, id="overlong-utf8"),
        pytest.param(b'{"provider": "\xed\xa0\x80"}', "application/json", "invalid_json", None, id="utf8-surrogate"),
        pytest.param('{"provider": "p"}'.encode("utf-16"), "application/json", "invalid_json", None, id="utf-16"),
        pytest.param(
            b'\xef\xbb\xbf{"provider": "p", "x": "\xff"}',
            "application/json",
            "invalid_json",
            None,
            id="bom-then-bad-utf8",
        ),
        pytest.param(b'{"provider": "\\ud800"}', "application/json", "invalid_event", 0, id="lone-surrogate-escape"),
        pytest.param(b'{"provider": "a"}\n{"provider": "\xff"}\n', NDJSON, "invalid_json", 1, id="ndjson-bad-utf8"),
        pytest.param(b'{"provider": "a"}\n{"provider": ', NDJSON, "invalid_json", 1, id="ndjson-truncated"),
        pytest.param(
            b'{"provider": "p", "route": ' + b"[" * 100_000,
            "application/json",
            "invalid_json",
            None,
            id="deep-in-a-field",
        ),
        pytest.param(
            b'{"provider": "p", "route": ' + b'{"a":' * 5_000 + b"1" + b"}" * 5_000 + b"}",
            "application/json",
            "invalid_json",
            None,
            id="nested-5000-in-a-field",
        ),
        pytest.param(
            b'{"provider": "p", "route": ' + b'{"a":' * 500 + b"1" + b"}" * 500 + b"}",
            "application/json",
            "invalid_event",
            0,
            id="nested-500-as-string-field",
        ),
        pytest.param(b'{"provider": "p", "status": 1e400}', "application/json", "invalid_event", 0, id="status-inf"),
        pytest.param(
            b'{"provider": "p", "status": ' + b"9" * 5000 + b"}",
            "application/json",
            "invalid_json",
            None,
            id="status-5000-digits",
        ),
        pytest.param(b'{"provider": "p", "status": 503.5}', "application/json", "invalid_event", 0, id="status-float"),
        pytest.param(b'{"provider": "p", "status": "503"}', "application/json", "invalid_event", 0, id="status-str"),
        pytest.param(b'{"provider": "p", "status": true}', "application/json", "invalid_event", 0, id="status-bool"),
        pytest.param(b'{"provider": "p", "status": -1}', "application/json", "invalid_event", 0, id="status-neg"),
        pytest.param(b'{"provider": "p", "timestamp": NaN}', "application/json", "invalid_json", None, id="ts-nan"),
        pytest.param(b'{"provider": "p", "timestamp": 1e400}', "application/json", "invalid_event", 0, id="ts-inf"),
        pytest.param(b'{"provider": "p", "timestamp": -5}', "application/json", "invalid_event", 0, id="ts-neg"),
        pytest.param(
            b'{"provider": "p", "timestamp": "2026-01-01T00:00:00"}',
            "application/json",
            "invalid_event",
            0,
            id="ts-no-offset",
        ),
        pytest.param(b'{"provider": 7}', "application/json", "invalid_event", 0, id="provider-int"),
        pytest.param(b'{"provider": ["p"]}', "application/json", "invalid_event", 0, id="provider-list"),
        pytest.param(b'{"provider": "p", "route": 5}', "application/json", "invalid_event", 0, id="route-int"),
        pytest.param(b'{"provider": "p", "message": {}}', "application/json", "invalid_event", 0, id="message-obj"),
        pytest.param(b"5", "application/json", "invalid_event", 0, id="top-level-number"),
        pytest.param(b"null", "application/json", "invalid_event", 0, id="top-level-null"),
        pytest.param(b"[" + b"1," * 400_000 + b"1]", "application/json", "invalid_event", 0, id="huge-array-of-ints"),
        pytest.param(b'[{"provider": "p"}, ' * 1 + b"{}]", "application/json", "invalid_event", 1, id="batch-bad-last"),
    ],
)
async def test_malformed_input_is_a_clear_400(body: bytes, content_type: str, error: str, index: int | None) -> None:
    async with running_daemon() as daemon:
        status, answer = await daemon.post(body, content_type=content_type)
        assert (status, answer["error"]) == (400, error), answer
        assert answer["detail"]
        assert answer.get("index") == index
        text = await daemon.scrape()
        assert metric(text, "alertd_ingest_rejected_total", reason=error) == 1
        assert metric(text, "alertd_tracked_providers") == 0  # all or nothing
        await assert_healthy(daemon)


async def test_duplicate_keys_last_wins_and_empty_batches_accept_nothing() -> None:
    async with running_daemon() as daemon:
        body = b'{"provider": "bad name", "status": "x", "provider": "p", "status": 503}'
        assert await daemon.post(body) == (202, {"accepted": 1})
        assert (await daemon.get_json("/v1/providers/p"))[0] == 200
        assert await daemon.post(b"[]") == (202, {"accepted": 0})
        assert await daemon.post(b"\n\n", content_type=NDJSON) == (202, {"accepted": 0})


INVISIBLE = {
    "zero-width-space": "\u200b",
    "zero-width-joiner": "\u200d",
    "left-to-right-mark": "\u200e",
    "right-to-left-mark": "\u200f",
    "right-to-left-override": "\u202e",
    "byte-order-mark": "\ufeff",
    "soft-hyphen": "\u00ad",
    "word-joiner": "\u2060",
    "tag-letter": "\U000e0061",
    "no-break-space": "\u00a0",
    "line-separator": "\u2028",
    # Found by this suite: default-ignorable characters that str.isprintable() accepts.
    "variation-selector": "\ufe0f",
    "combining-grapheme-joiner": "\u034f",
    "hangul-filler": "\u3164",
    "halfwidth-hangul-filler": "\uffa0",
    "mongolian-fvs": "\u180b",
    "variation-selector-supplement": "\U000e0100",
}


@pytest.mark.parametrize("char", INVISIBLE.values(), ids=INVISIBLE.keys())
async def test_invisible_characters_in_a_provider_are_rejected(char: str) -> None:
    async with running_daemon() as daemon:
        for provider in (f"openai{char}", f"{char}openai", f"op{char}enai"):
            status, answer = await daemon.post({"provider": provider})
            assert (status, answer["error"]) == (400, "invalid_event"), ascii(provider)
            assert "invisible" in answer["detail"]
        assert metric(await daemon.scrape(), "alertd_tracked_providers") == 0


async def test_homoglyphs_are_distinct_providers_as_documented() -> None:
    async with running_daemon() as daemon:
        names = ["openai", "\u043epenai", "openal", "OPENAI", "op\u0435nai"]  # Cyrillic o and e look Latin
        for name in names:
            assert await daemon.post({"provider": name}) == (202, {"accepted": 1})
        _, listing = await daemon.get_json("/v1/providers")
        assert sorted(p["provider"] for p in listing["providers"]) == sorted(names)


@functools.cache
def bomb(encoding: str, mib: int) -> bytes:
    """`mib` MiB of zeros, compressed a MiB at a time (the test never holds the inflated form)."""
    chunk = b"\x00" * (1024 * 1024)
    if encoding == "br":
        compressor = brotli.Compressor(quality=5)
        return b"".join(bytes(compressor.process(chunk)) for _ in range(mib)) + bytes(compressor.finish())
    compress = zlib.compressobj(6, wbits=31 if encoding == "gzip" else 15)
    return b"".join(compress.compress(chunk) for _ in range(mib)) + compress.flush()


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
async def test_a_compression_bomb_hits_the_limit_after_inflation_with_bounded_memory(encoding: str) -> None:
    body = bomb(encoding, 256)  # 256 MiB of zeros in well under 1 MiB
    assert len(body) < 1024 * 1024
    async with running_daemon() as daemon:
        before = rss_mib(os.getpid())
        for _ in range(3):
            response = await anyio.to_thread.run_sync(
                partial(
                    raw_request,
                    port_of(daemon),
                    headers={b"Content-Type": b"application/json", b"Content-Encoding": encoding.encode()},
                    body=body,
                )
            )
            assert response.status == 413
            assert json.loads(response.body)["error"] == "body_too_large"
        # Inflating it whole would take 256 MiB; the limit (1 MiB) stops it after a few chunks.
        assert rss_mib(os.getpid()) - before < 64
        assert metric(await daemon.scrape(), "alertd_ingest_rejected_total", reason="body_too_large") == 3
        await assert_healthy(daemon)


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", b"this is not gzip"),
        ("deflate", b"\x00\x01 not deflate"),
        ("br", b"this is not brotli"),
    ],
)
async def test_a_body_that_does_not_inflate_is_400_not_500(encoding: str, body: bytes) -> None:
    """Found by this suite: a corrupt compressed body was an internal error (500, reported to Sentry)."""
    async with running_daemon() as daemon:
        headers = {b"Content-Type": b"application/json", b"Content-Encoding": encoding.encode()}
        response = await anyio.to_thread.run_sync(partial(raw_request, port_of(daemon), headers=headers, body=body))
        assert response.status == 400
        assert json.loads(response.body)["error"] == "invalid_body"
        assert metric(await daemon.scrape(), "alertd_ingest_rejected_total", reason="invalid_body") == 1
        await assert_healthy(daemon)


async def test_a_client_gone_mid_body_is_not_an_internal_error() -> None:
    """Found by this suite: a client that hung up mid-body was logged and reported as an internal error."""
    async with running_daemon() as daemon:
        stream = await anyio.connect_tcp("127.0.0.1", port_of(daemon))
        await stream.send(
            b"POST /v1/failures HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"provider"'
        )
        await anyio.sleep(0.1)
        await stream.aclose()

        async def counted() -> bool:
            return metric(await daemon.scrape(), "alertd_ingest_rejected_total", reason="incomplete_body") == 1

        await wait_until(counted, within=5)
        await assert_healthy(daemon)


async def test_a_huge_batch_of_tiny_items_is_accepted_without_holding_the_event_loop() -> None:
    """Found by this suite: 40k distinct providers in one 1 MiB batch held the loop for seconds, and left
    metric series for providers evicted within the same batch (label values above the cap)."""
    async with running_daemon({"ALERTD_MAX_PROVIDERS": "1000", "ALERTD_LOG_LEVEL": "info"}) as daemon:
        items = [{"provider": f"p{i}"} for i in range(45_000)]
        body = json.dumps(items, separators=(",", ":")).encode()
        assert len(body) < 1024 * 1024
        probes: list[float] = []
        done = anyio.Event()
        result: list[tuple[int, dict[str, object]]] = []

        async def big() -> None:
            result.append(await daemon.post(body))
            done.set()

        async def probe() -> None:
            while not done.is_set():
                start = time.perf_counter()
                async with daemon.session.get(f"{daemon.metrics}/healthz") as response:
                    assert response.status == 200
                probes.append(time.perf_counter() - start)
                await anyio.sleep(0.005)

        start = time.perf_counter()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(big)
            tasks.start_soon(probe)
        elapsed = time.perf_counter() - start
        assert result == [(202, {"accepted": 45_000})]
        # Generous: no probe waited for more than half of the whole batch.
        assert probes
        assert max(probes) < 0.5 * elapsed, (max(probes), elapsed)
        text = await daemon.scrape()
        assert metric(text, "alertd_tracked_providers") == 1000
        assert len([line for line in text.splitlines() if line.startswith("alertd_failures_total{")]) == 1000
        assert metric(text, "alertd_providers_evicted_total") == 44_000
