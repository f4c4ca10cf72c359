"""The reporters validate each event exactly as alertd does, so a batch is never rejected whole."""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alertd.client._core import Buffer, Target, apply_answer, encode, judge, make_item
from alertd.errors import InvalidEventError
from alertd.event import parse_event

TEXT = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=120, max_size=140),
    st.text(min_size=250, max_size=260),
    st.text(min_size=1020, max_size=1030),
    st.integers(),
    st.booleans(),
)
PROVIDER = st.one_of(
    st.text(min_size=0, max_size=10),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=126, max_size=130),
    st.sampled_from(
        [
            "openai",
            "a b",
            "a\tb",
            "a\u200bb",
            "a\u202eb",
            "\u00a0",
            "open\u034fai",
            "x\ufe0f",
            "\u00e9t\u00e9",
            "x" * 128,
            "x" * 129,
            "\ud800",
        ]
    ),
    st.none(),
    st.integers(),
)
STATUS = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=1000),
    st.floats(min_value=0, max_value=1000),
    st.booleans(),
    st.text(max_size=3),
)


def alertd_accepts(item: dict[str, Any]) -> bool:
    """Does alertd itself accept this event, once it has gone through JSON?"""
    try:
        decoded = json.loads(json.dumps(item))
        parse_event(decoded, 0, lambda key: key)
    except InvalidEventError:
        return False
    return True


@settings(max_examples=600, deadline=None)
@given(
    provider=PROVIDER,
    route=TEXT,
    request_id=TEXT,
    api_key=TEXT,
    error_type=TEXT,
    status=STATUS,
    message=st.one_of(st.none(), st.text(max_size=2000), st.integers()),
)
def test_local_validation_agrees_with_alertd(  # noqa: PLR0917 - one parameter per field
    provider: Any, route: Any, request_id: Any, api_key: Any, error_type: Any, status: Any, message: Any
) -> None:
    item = make_item(provider, route, request_id, api_key, error_type, status, message)
    fields = {
        "provider": provider,
        "route": route,
        "request_id": request_id,
        "api_key": api_key,
        "error_type": error_type,
        "status": status,
        "message": message,
    }
    lone_surrogate = isinstance(provider, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in provider)
    if lone_surrogate:
        assert item is None  # stricter than alertd, which may pair two escaped halves into one character
        return
    assert (item is not None) == alertd_accepts(fields)
    if item is not None:
        # and what is sent is accepted by alertd's own decoder
        parse_event(json.loads(encode(item)), 0, lambda key: key)


class Status(IntEnum):
    UNAVAILABLE = 503


def test_an_int_enum_status_is_sent_as_a_plain_int_and_a_long_message_is_cut() -> None:
    item = make_item("p", None, None, None, None, Status.UNAVAILABLE, "m" * 5000)
    assert item is not None
    sent = json.loads(encode(item))
    assert sent["status"] == 503
    assert type(sent["status"]) is int
    assert len(sent["message"]) == 1024
    assert isinstance(sent["timestamp"], float)
    assert set(sent) == {"provider", "status", "message", "timestamp"}


@pytest.mark.parametrize(
    ("status", "body", "action"),
    [
        (202, b'{"accepted": 3}', "sent"),
        (413, b"{}", "split"),
        (400, b'{"error": "invalid_event", "detail": "x", "index": 1}', "drop_one"),
        (400, b"not json", "reject"),
        (400, b'{"index": 7}', "reject"),
        (401, b"{}", "reject"),
        (415, b"{}", "reject"),
        (408, b"", "retry"),
        (429, b"", "retry"),
        (500, b"", "retry"),
        (503, b"", "retry"),
    ],
)
def test_each_answer_of_alertd_has_one_verdict(status: int, body: bytes, action: str) -> None:
    assert judge(status, body, 3).action == action


def test_an_event_alertd_refuses_is_dropped_alone_and_the_rest_is_sent_on() -> None:
    buffer = Buffer(10)
    for name in "abc":
        item = make_item(name, None, None, None, None, None, None)
        assert item is not None
        buffer.put(item)
    batch = buffer.take(10, 1 << 20)
    parts = apply_answer(buffer, batch, 400, b'{"error": "invalid_event", "detail": "d", "index": 1}')
    assert parts is not None
    [rest] = parts
    assert [item[0] for item, _ in rest] == ["a", "c"]
    assert buffer.stats().dropped_rejected == 1
    assert apply_answer(buffer, rest, 202, b'{"accepted": 2}') == []
    stats = buffer.stats()
    assert (stats.sent, stats.in_flight, stats.queued) == (2, 0, 0)


def test_a_full_buffer_drops_the_oldest_also_when_a_failed_batch_comes_back() -> None:
    buffer = Buffer(3)
    items = [make_item(f"p{i}", None, None, None, None, None, None) for i in range(6)]
    for item in items[:3]:
        assert item is not None
        buffer.put(item)
    batch = buffer.take(2, 1 << 20)  # p0, p1 in flight
    for item in items[3:5]:
        assert item is not None
        buffer.put(item)  # p2, p3, p4: full
    buffer.give_back(batch)  # p0, p1 are the oldest: they go first
    assert [item[0] for item in buffer.items] == ["p2", "p3", "p4"]
    assert buffer.stats().dropped_overflow == 2


def test_a_batch_is_cut_to_its_byte_budget() -> None:
    buffer = Buffer(100)
    for i in range(10):
        item = make_item(f"p{i}", None, None, None, None, None, "m" * 100)
        assert item is not None
        buffer.put(item)
    batch = buffer.take(10, 400)
    assert 1 <= len(batch) < 10
    assert sum(len(line) for _, line in batch) <= 400
    assert buffer.stats().queued == 10 - len(batch)
    assert buffer.stats().in_flight == len(batch)


@pytest.mark.parametrize(
    ("text", "url", "unix"),
    [
        ("http://127.0.0.1:9180", "http://127.0.0.1:9180/v1/failures", None),
        ("http://localhost:9180/", "http://localhost:9180/v1/failures", None),
        ("http://[::1]:9180", "http://[::1]:9180/v1/failures", None),
        ("http://127.0.0.1:9180/v1/failures", "http://127.0.0.1:9180/v1/failures", None),
        ("http://gw:8080/alertd/", "http://gw:8080/alertd/v1/failures", None),
        ("https://alertd.internal", "https://alertd.internal:443/v1/failures", None),
        ("unix:/var/run/alertd/alertd.sock", "http://alertd/v1/failures", "/var/run/alertd/alertd.sock"),
    ],
)
def test_addresses(text: str, url: str, unix: str | None) -> None:
    target = Target.parse(text)
    assert (target.url, target.unix_path) == (url, unix)


@pytest.mark.parametrize("text", ["127.0.0.1:9180", "unix:relative.sock", "ftp://x", "http://", "http://h:99999"])
def test_bad_addresses_raise_inside_the_parser_only(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        Target.parse(text)
