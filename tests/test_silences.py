"""The pure silence store and the parsing of silence requests and durations."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alertd.errors import InvalidSilenceError, SilenceLimitError
from alertd.silences import (
    MAX_DURATION_SECONDS,
    Silence,
    SilenceStore,
    parse_duration,
    parse_silence_request,
)

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def counting_ids() -> SilenceStore:
    ids = (f"s{n}" for n in itertools.count(1))
    return SilenceStore(new_id=lambda: next(ids))


def test_a_silence_is_active_until_its_end() -> None:
    silence = Silence("a", "openai", "c", None, NOW, NOW + 60)
    assert silence.active(NOW)
    assert silence.active(NOW + 59.999)
    assert not silence.active(NOW + 60)
    assert silence.covers("openai", NOW + 30)
    assert not silence.covers("openai", NOW + 60)
    assert not silence.covers("anthropic", NOW + 30)


def test_covers_matches_the_glob_case_sensitively() -> None:
    silence = Silence("a", "bedrock-*", "c", None, NOW, NOW + 60)
    assert silence.covers("bedrock-us-east-1", NOW)
    assert silence.covers("bedrock-", NOW)
    assert not silence.covers("Bedrock-us", NOW)
    assert not silence.covers("bedrock", NOW)
    assert Silence("b", "open?i", "c", None, NOW, NOW + 60).covers("openai", NOW)
    assert Silence("c", "[ab]*", "c", None, NOW, NOW + 60).covers("anthropic", NOW)
    assert Silence("d", "*", "c", None, NOW, NOW + 60).covers("anything", NOW)


def test_to_json_is_the_api_view() -> None:
    silence = Silence("a", "openai", "deploy", "bob", NOW, NOW + 90.5, expired_at=NOW + 30)
    assert silence.to_json(NOW + 40) == {
        "id": "a",
        "providers": "openai",
        "comment": "deploy",
        "created_by": "bob",
        "created_at": "2027-01-15T08:00:00.000Z",
        "ends_at": "2027-01-15T08:01:30.500Z",
        "active": False,
        "expired_at": "2027-01-15T08:00:30.000Z",
    }
    assert silence.to_json(NOW + 29.9)["active"] is True  # before the time it was expired at
    assert Silence("b", "p", "c", None, NOW, NOW + 60).to_json(NOW)["active"] is True


def test_state_round_trip_and_wrong_shapes() -> None:
    silence = Silence("a", "open*", "deploy", None, NOW + 0.123, NOW + 60.456, expired_at=NOW + 1.5)
    assert Silence.from_json(silence.to_state()) == silence
    good = silence.to_state()
    bad: object
    for bad in (
        [],
        "x",
        {**good, "id": ""},
        {**good, "providers": None},
        {**good, "comment": 3},
        {**good, "created_by": 3},
        {**good, "ends_at": "2027-01-15T08:00:00Z"},
        {**good, "created_at": True},
        {**good, "ends_at": math.inf},
        {**good, "ends_at": -1},
        {**good, "expired_at": "x"},
        {k: v for k, v in good.items() if k != "ends_at"},
    ):
        with pytest.raises(ValueError, match="silence"):
            Silence.from_json(bad)


def test_add_list_and_expire() -> None:
    store = counting_ids()
    first = store.add("openai", NOW + 600, "deploy", "alice", NOW)
    second = store.add("bedrock-*", NOW + 60, "maintenance", None, NOW + 1)
    assert (first.id, second.id) == ("s1", "s2")
    assert store.listing(NOW + 2) == [first, second]
    assert store.expire("s1", NOW + 10)
    [expired, _] = store.listing(NOW + 11)
    assert expired.expired_at == NOW + 10
    assert not expired.active(NOW + 11)
    assert store.covering("openai", NOW + 11) is None
    assert not store.expire("nope", NOW + 11)


def test_expiring_an_ended_silence_keeps_it_as_it_was() -> None:
    store = counting_ids()
    silence = store.add("p", NOW + 60, "c", None, NOW)
    assert store.expire(silence.id, NOW + 100)  # ended by time 40 s ago: still listed, so known
    assert store.listing(NOW + 100) == [silence]
    assert store.expire(silence.id, NOW + 60 + 3599)
    assert not store.expire(silence.id, NOW + 60 + 3600)  # dropped an hour after its end


def test_listing_keeps_ended_silences_for_one_hour_after_their_end() -> None:
    store = counting_ids()
    by_time = store.add("a", NOW + 60, "c", None, NOW)
    deleted = store.add("b", NOW + 7200, "c", None, NOW)
    store.expire(deleted.id, NOW + 30)
    assert [s.id for s in store.listing(NOW + 30 + 3599.9)] == [by_time.id, deleted.id]
    assert [s.id for s in store.listing(NOW + 30 + 3600)] == [by_time.id]
    assert [s.id for s in store.listing(NOW + 60 + 3599.9)] == [by_time.id]
    assert store.listing(NOW + 60 + 3600) == []
    assert store.snapshot() == []


def test_covering_picks_the_active_one_ending_last() -> None:
    store = counting_ids()
    store.add("open*", NOW + 100, "c", None, NOW)
    long = store.add("openai", NOW + 500, "c", None, NOW)
    store.add("*", NOW + 300, "c", None, NOW)
    assert store.covering("openai", NOW) == long
    covering_other = store.covering("openrouter", NOW)
    assert covering_other is not None
    assert covering_other.id == "s3"
    store.expire(long.id, NOW + 1)
    covering = store.covering("openai", NOW + 1)
    assert covering is not None
    assert covering.id == "s3"
    assert store.covering("openai", NOW + 300) is None


def test_active_silences_are_bounded() -> None:
    store = SilenceStore(max_active=3)
    for n in range(3):
        store.add(f"p{n}", NOW + 60, "c", None, NOW)
    with pytest.raises(SilenceLimitError, match="3 active silences"):
        store.add("p3", NOW + 60, "c", None, NOW)
    # Once they end, new ones are accepted, and ended ones stay bounded too.
    for n in range(10):
        store.add(f"q{n}", NOW + 61 + n, "c", None, NOW + 60 + n)
        store.expire(store.listing(NOW + 60 + n)[-1].id, NOW + 60.5 + n)
    assert len(store.listing(NOW + 70)) <= 3 + 3
    assert len(store.snapshot()) <= 6


def test_snapshot_and_restore_keep_silences_and_their_expiry() -> None:
    store = counting_ids()
    active = store.add("openai", NOW + 600, "deploy", "alice", NOW)
    ended = store.add("anthropic", NOW + 600, "x", None, NOW)
    store.expire(ended.id, NOW + 5)
    restored = SilenceStore()
    restored.restore([Silence.from_json(item) for item in store.snapshot()])
    assert restored.listing(NOW + 10) == store.listing(NOW + 10)
    assert restored.covering("openai", NOW + 10) == active
    assert restored.covering("anthropic", NOW + 10) is None


def test_restore_still_bounds_the_active_silences() -> None:
    silences = [Silence(f"s{n}", "p", "c", None, NOW, NOW + 100 + n) for n in range(5)]
    store = SilenceStore(max_active=2)
    store.restore(silences)
    assert [s.id for s in store.listing(NOW)] == ["s3", "s4"]


VALID = {"providers": "openai", "comment": "deploy"}


def test_parse_silence_request_with_a_duration_or_an_end() -> None:
    assert parse_silence_request({**VALID, "duration_seconds": 90}, NOW) == ("openai", NOW + 90, "deploy", None)
    assert parse_silence_request({**VALID, "duration_seconds": 0.5, "created_by": "bob"}, NOW) == (
        "openai",
        NOW + 0.5,
        "deploy",
        "bob",
    )
    parsed = parse_silence_request({**VALID, "ends_at": "2027-01-15T09:00:00.250Z"}, NOW)
    assert parsed == ("openai", NOW + 3600.25, "deploy", None)
    parsed = parse_silence_request({**VALID, "ends_at": "2027-01-15t04:00:00-05:00", "created_by": None}, NOW)
    assert parsed == ("openai", NOW + 3600 * 1, "deploy", None)
    latest = parse_silence_request({**VALID, "ends_at": "9999-12-31T23:59:59Z"}, NOW)[1]
    assert latest == 253402300799.0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (None, "body"),
        ([VALID], "body"),
        ({"comment": "c", "duration_seconds": 1}, "providers"),
        ({**VALID, "providers": "", "duration_seconds": 1}, "providers"),
        ({**VALID, "providers": ["a", "b"], "duration_seconds": 1}, "providers"),
        ({**VALID, "providers": "a\tb", "duration_seconds": 1}, "providers"),
        ({**VALID, "providers": "a\x00", "duration_seconds": 1}, "providers"),
        ({**VALID, "providers": "\ufeffa", "duration_seconds": 1}, "providers"),
        ({**VALID, "providers": "a" * 257, "duration_seconds": 1}, "providers"),
        ({"providers": "p", "duration_seconds": 1}, "comment"),
        ({**VALID, "comment": None, "duration_seconds": 1}, "comment"),
        ({**VALID, "comment": "\u3000\n", "duration_seconds": 1}, "comment"),
        ({**VALID, "comment": "c" * 1025, "duration_seconds": 1}, "comment"),
        ({**VALID, "created_by": ["x"], "duration_seconds": 1}, "created_by"),
        ({**VALID, "created_by": "x" * 257, "duration_seconds": 1}, "created_by"),
        (VALID, "ends_at"),
        ({**VALID, "ends_at": "2027-01-15T09:00:00Z", "duration_seconds": 1}, "ends_at"),
        ({**VALID, "ends_at": None}, "ends_at"),
        ({**VALID, "ends_at": "2027-01-15"}, "ends_at"),
        ({**VALID, "ends_at": "2027-01-15T09:00:00"}, "ends_at"),
        ({**VALID, "ends_at": "20270115T090000Z"}, "ends_at"),
        ({**VALID, "ends_at": "2027-02-30T09:00:00Z"}, "ends_at"),
        ({**VALID, "ends_at": "2027-01-15T09:00:00+24:00"}, "ends_at"),
        ({**VALID, "ends_at": "2027-01-15T08:00:00Z"}, "ends_at"),  # now is not in the future
        ({**VALID, "ends_at": "1969-12-31T23:59:59Z"}, "ends_at"),
        ({**VALID, "ends_at": "9999-12-31T23:59:59-01:00"}, "ends_at"),
        ({**VALID, "duration_seconds": None}, "duration_seconds"),
        ({**VALID, "duration_seconds": 0}, "duration_seconds"),
        ({**VALID, "duration_seconds": -1}, "duration_seconds"),
        ({**VALID, "duration_seconds": math.nan}, "duration_seconds"),
        ({**VALID, "duration_seconds": math.inf}, "duration_seconds"),
        ({**VALID, "duration_seconds": MAX_DURATION_SECONDS + 1}, "duration_seconds"),
        ({**VALID, "duration_seconds": False}, "duration_seconds"),
        ({**VALID, "duration_seconds": "60"}, "duration_seconds"),
    ],
)
def test_every_invalid_field_is_named(body: Any, field: str) -> None:
    with pytest.raises(InvalidSilenceError) as caught:
        parse_silence_request(body, NOW)
    assert caught.value.field == field
    assert str(caught.value).startswith(field)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1.5h", 5400), ("0.5", 0.5)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0s", "-5", "5x", "h", "1 h", " 5", "5h ", "inf", "nan", "1e3", "367d", "٣"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@given(st.integers(min_value=1, max_value=400 * 86400), st.sampled_from(sorted(UNITS)))
def test_parse_duration_scales_whole_numbers_by_their_unit(number: int, unit: str) -> None:
    seconds = number * UNITS[unit]
    if seconds <= MAX_DURATION_SECONDS:
        assert parse_duration(f"{number}{unit}") == seconds
    else:
        with pytest.raises(ValueError, match="366 days"):
            parse_duration(f"{number}{unit}")


@given(st.text(max_size=12))
def test_parse_duration_returns_a_bounded_positive_number_or_raises(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert 0 < seconds <= MAX_DURATION_SECONDS
    assert text.rstrip("smhd").replace(".", "", 1).isascii()
    assert text.rstrip("smhd").replace(".", "", 1).isdigit()
