"""Alert building: the Sentry event's message, fingerprint, tags and context."""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alertd.alert import build_alert, clean_tag_key, clean_tag_value, format_duration
from alertd.event import FailureEvent
from alertd.tracker import Trigger
from alertd.window import Rule

TAG_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,32}")


def trigger(event: FailureEvent, **overrides: object) -> Trigger:
    fields: dict[str, object] = {
        "provider": event.provider,
        "event": event,
        "at": 100.0,
        "count": 7,
        "first_at": 40.0,
        "throttled_since_last": 3,
        "recent": ((90.0, event), (100.0, event)),
        "rule": Rule(threshold=5, window=300, cooldown=60),
    }
    fields.update(overrides)
    return Trigger(**fields)  # type: ignore[arg-type]


def test_event_has_level_message_fingerprint_tags_and_context() -> None:
    event = FailureEvent(
        provider="anthropic",
        route="/v1/messages",
        request_id="req-1",
        api_key="sk-a…0123456789ab",
        error_type="overloaded",
        status=529,
    )
    alert = build_alert(trigger(event), epoch_offset=1_700_000_000.0, new_id=lambda: "e" * 32)
    payload = alert.to_sentry_event()
    assert payload["event_id"] == "e" * 32
    assert payload["level"] == "error"
    assert payload["message"] == (
        "Upstream provider anthropic failed 7 times in the last 300s (threshold 5), opens a firing episode"
        " (3 more threshold hits throttled since the last alert)"
    )
    assert "anthropic" in payload["fingerprint"]
    assert payload["tags"] == {
        "alertd_kind": "upstream_failure",
        "provider": "anthropic",
        "route": "/v1/messages",
        "request_id": "req-1",
        "error_type": "overloaded",
        "status_code": "529",
        "api_key": "sk-a…0123456789ab",
    }
    context = payload["contexts"]["upstream_failure"]
    assert context["count"] == 7
    assert context["threshold"] == 5
    assert context["window_seconds"] == 300
    assert context["throttled_since_last_alert"] == 3
    assert context["first_failure_at"] == "2023-11-14T22:14:00.000Z"
    assert context["last_failure_at"] == "2023-11-14T22:15:00.000Z"
    assert len(context["recent_failures"]) == 2
    assert context["recent_failures"][0]["request_id"] == "req-1"


def test_message_says_time_for_one_failure() -> None:
    alert = build_alert(trigger(FailureEvent(provider="p"), count=1), epoch_offset=0.0)
    assert "failed 1 time in the last" in alert.message


def test_empty_tags_are_omitted() -> None:
    alert = build_alert(trigger(FailureEvent(provider="p")), epoch_offset=0.0)
    assert alert.tags() == {"alertd_kind": "upstream_failure", "provider": "p"}


def test_each_alert_gets_a_new_id() -> None:
    t = trigger(FailureEvent(provider="p"))
    assert build_alert(t, 0.0).event_id != build_alert(t, 0.0).event_id


def test_tag_values_are_cut_and_cleaned() -> None:
    assert clean_tag_value("line1\nline2") == "line1 line2"
    long = clean_tag_value("x" * 500)
    assert long is not None
    assert len(long) == 200
    assert long.endswith("…")
    assert clean_tag_value("  \n ") is None
    assert clean_tag_value(None) is None
    assert clean_tag_key("status code/with spaces and more than thirty-two") == "status_code_with_spaces_and_more"


@given(st.text(max_size=400))
def test_any_tag_value_survives_sentry_normalization(text: str) -> None:
    value = clean_tag_value(text)
    if value is not None:
        assert 1 <= len(value) <= 200
        assert "\n" not in value
        assert value == value.strip()
        assert value.isprintable()


@given(st.text(min_size=1, max_size=100))
def test_any_tag_key_is_valid(text: str) -> None:
    key = clean_tag_key(text)
    assert TAG_KEY.fullmatch(key)


def test_test_alert_is_labelled() -> None:
    alert = build_alert(trigger(FailureEvent(provider="p")), 0.0, test=True)
    assert alert.message.startswith("[TEST ALERT")
    assert alert.tags()["alertd_test"] == "true"


def test_a_later_alert_says_how_long_its_episode_has_been_open() -> None:
    t = trigger(FailureEvent(provider="p"), throttled_since_last=0, episode_started_at=-25.0, episode_alerts=3)
    alert = build_alert(t, epoch_offset=1000.0)
    assert alert.message == "Upstream provider p failed 7 times in the last 300s (threshold 5), firing for 2m 5s"
    assert alert.context()["episode"] == {"started_at": "1970-01-01T00:16:15.000Z", "opens": False, "alert_number": 3}


def test_the_message_counts_throttled_hits_and_undelivered_alerts() -> None:
    t = trigger(FailureEvent(provider="p"), throttled_since_last=1, episode_started_at=100.0)
    alert = dataclasses.replace(build_alert(t, 0.0), undelivered_since_last=2)
    assert alert.message.endswith(
        "opens a firing episode (1 more threshold hit throttled since the last alert; "
        "2 earlier alerts could not be delivered)"
    )


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (45.4, "45s"), (125, "2m 5s"), (3600, "1h"), (3780, "1h 3m"), (190_000, "2d 4h")],
)
def test_durations_are_short_and_human(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown
