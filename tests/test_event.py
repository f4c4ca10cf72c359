"""Decoding ingest bodies: every accepted shape, every rejected one with its index."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alertd.errors import InvalidEventError
from alertd.event import JSON, NDJSON, FailureEvent, decode_events, decode_valid_events, validate_events


def mark(key: str) -> str:
    return f"anon({len(key)})"


def decode(body: bytes | str, content_type: str = JSON) -> list[FailureEvent]:
    return decode_events(body.encode() if isinstance(body, str) else body, content_type, mark)


def rejected(body: bytes | str, content_type: str = JSON) -> InvalidEventError:
    with pytest.raises(InvalidEventError) as info:
        decode(body, content_type)
    return info.value


def test_single_object_array_and_ndjson() -> None:
    full = {
        "provider": "openai",
        "route": "/v1/chat",
        "request_id": "r1",
        "api_key": "sk-secret",
        "error_type": "timeout",
        "status": 504,
        "message": "upstream timed out",
        "timestamp": "2026-11-27T10:00:00Z",
        "unknown": {"ignored": True},
    }
    [event] = decode(json.dumps(full))
    assert event == FailureEvent(
        provider="openai",
        route="/v1/chat",
        request_id="r1",
        api_key="anon(9)",
        error_type="timeout",
        status=504,
        message="upstream timed out",
        timestamp=1795773600.0,
    )
    assert [e.provider for e in decode('[{"provider": "a"}, {"provider": "b"}]')] == ["a", "b"]
    assert [e.provider for e in decode('{"provider": "a"}\n\n{"provider": "b"}\n', NDJSON)] == ["a", "b"]
    assert decode("[]") == []
    assert decode('{"provider": "p", "timestamp": 1700000000.5}')[0].timestamp == 1700000000.5


def test_raw_key_is_replaced_at_the_boundary() -> None:
    [event] = decode('{"provider": "p", "api_key": "sk-live-abcdef"}')
    assert "sk-live-abcdef" not in repr(event)


@pytest.mark.parametrize(
    ("body", "code", "index"),
    [
        ("{", "invalid_json", None),
        ('{"provider": "p"', "invalid_json", None),
        (b'{"provider": "\xff"}', "invalid_json", None),
        ('{"provider": NaN}', "invalid_json", None),
        ("[" * 100_000 + "]" * 100_000, "invalid_json", None),
        ("42", "invalid_event", 0),
        ('[{"provider": "ok"}, "str"]', "invalid_event", 1),
        ('[{"provider": "ok"}, {}]', "invalid_event", 1),
        ('{"provider": ""}', "invalid_event", 0),
        ('{"provider": "' + "x" * 129 + '"}', "invalid_event", 0),
        ('{"provider": "open ai"}', "invalid_event", 0),
        ('{"provider": "open\\tai"}', "invalid_event", 0),
        ('{"provider": "open\\u0000ai"}', "invalid_event", 0),
        ('{"provider": "open\\u200bai"}', "invalid_event", 0),
        ('{"provider": "open\\u202eai"}', "invalid_event", 0),
        ('{"provider": 7}', "invalid_event", 0),
        ('{"provider": "p", "status": 99}', "invalid_event", 0),
        ('{"provider": "p", "status": 600}', "invalid_event", 0),
        ('{"provider": "p", "status": "500"}', "invalid_event", 0),
        ('{"provider": "p", "status": true}', "invalid_event", 0),
        ('{"provider": "p", "status": 500.5}', "invalid_event", 0),
        ('{"provider": "p", "route": 5}', "invalid_event", 0),
        ('{"provider": "p", "request_id": "' + "r" * 257 + '"}', "invalid_event", 0),
        ('{"provider": "p", "message": []}', "invalid_event", 0),
        ('{"provider": "p", "timestamp": "yesterday"}', "invalid_event", 0),
        ('{"provider": "p", "timestamp": "2026-11-27T10:00:00"}', "invalid_event", 0),
        ('{"provider": "p", "timestamp": -1}', "invalid_event", 0),
        ('{"provider": "p", "timestamp": 1e300}', "invalid_event", 0),
    ],
)
def test_rejections_name_code_and_index(body: str | bytes, code: str, index: int | None) -> None:
    error = rejected(body)
    assert (error.code, error.index) == (code, index)
    assert error.detail


def test_an_integral_number_is_an_integer_status() -> None:
    assert [e.status for e in decode('[{"provider": "p", "status": 503.0}, {"provider": "p", "status": 5e2}]')] == [
        503,
        500,
    ]


def test_ndjson_names_the_bad_line() -> None:
    error = rejected('{"provider": "a"}\n{"provider": "b"}\n{oops\n', NDJSON)
    assert (error.code, error.index) == ("invalid_json", 2)
    error = rejected('{"provider": "a"}\n{"provider": 1}\n', NDJSON)
    assert (error.code, error.index) == ("invalid_event", 1)


def test_long_message_is_cut_not_rejected() -> None:
    [event] = decode(json.dumps({"provider": "p", "message": "m" * 5000}))
    assert event.message == "m" * 1024


def test_duplicate_keys_last_wins() -> None:
    assert decode('{"provider": "a", "provider": "b"}')[0].provider == "b"


def test_homoglyphs_are_distinct_providers() -> None:
    # A Cyrillic o (U+043E) in place of the Latin one is a different provider: documented, not normalized.
    assert decode('{"provider": "\\u043epenai"}')[0].provider != "openai"


event_fields = st.fixed_dictionaries(
    {"provider": st.one_of(st.text(max_size=130), st.integers(), st.none())},
    optional={
        "route": st.one_of(st.text(st.characters(codec=None), max_size=40), st.integers(), st.none()),
        "request_id": st.one_of(st.text(max_size=300), st.none()),
        "api_key": st.one_of(st.text(max_size=60), st.booleans()),
        "error_type": st.text(max_size=130),
        "status": st.one_of(
            st.integers(0, 700), st.sampled_from([503.0, 1e2, 99.0]), st.floats(allow_nan=False), st.text(max_size=3)
        ),
        "message": st.one_of(st.text(max_size=1100), st.integers()),
        "timestamp": st.one_of(st.floats(-10, 2e11, allow_nan=False), st.integers(), st.text(max_size=30)),
        "extra": st.integers(),
    },
)


@settings(max_examples=400)
@given(items=st.lists(event_fields, max_size=4), as_array=st.booleans(), ndjson=st.booleans())
def test_fast_path_agrees_with_the_python_validator(
    items: list[dict[str, object]], as_array: bool, ndjson: bool
) -> None:
    # The fast path may hand a body it cannot check to the validator (an integral float status, a lone
    # surrogate); whenever it accepts one, it yields exactly the validator's events.
    if ndjson:
        body, content_type = "\n".join(json.dumps(item) for item in items).encode(), NDJSON
    else:
        body, content_type = json.dumps(items if as_array or not items else items[0]).encode(), JSON
    fast = decode_valid_events(body, content_type, mark)
    try:
        slow: list[FailureEvent] | InvalidEventError = validate_events(body, content_type, mark)
    except InvalidEventError as exc:
        slow = exc
    if fast is not None:
        assert fast == slow


def test_fast_path_takes_the_ordinary_bodies() -> None:
    ordinary = {"provider": "openai", "route": "/v1/chat", "status": 503, "api_key": "sk-123", "request_id": "r"}
    for body, content_type in (
        (json.dumps(ordinary), JSON),
        (json.dumps([ordinary] * 3), JSON),
        (json.dumps(ordinary) + "\n" + json.dumps(ordinary), NDJSON),
    ):
        fast = decode_valid_events(body.encode(), content_type, mark)
        assert fast is not None
        assert fast == validate_events(body.encode(), content_type, mark)
