"""Alerts decided while Redis is unreachable say so in Sentry and in the log: the tag alertd_mode: fallback."""

from __future__ import annotations

from alertd.alert import build_alert
from alertd.event import FailureEvent
from alertd.tracker import Trigger
from alertd.window import Rule


def trigger(*, fallback: bool) -> Trigger:
    event = FailureEvent(provider="openai", request_id="r1", status=503)
    return Trigger(
        provider="openai",
        event=event,
        at=10.0,
        count=5,
        first_at=9.0,
        throttled_since_last=0,
        recent=((10.0, event),),
        rule=Rule(),
        fallback=fallback,
    )


def test_fallback_alert_carries_the_tag_in_sentry_and_log() -> None:
    alert = build_alert(trigger(fallback=True), epoch_offset=1_700_000_000.0)
    assert alert.to_sentry_event()["tags"]["alertd_mode"] == "fallback"
    assert alert.to_log_fields()["tags"]["alertd_mode"] == "fallback"
    assert alert.to_sentry_event()["fingerprint"] == ["alertd-upstream-failure", "openai"], "same Sentry issue"


def test_shared_or_per_pod_alert_has_no_mode_tag() -> None:
    alert = build_alert(trigger(fallback=False), epoch_offset=1_700_000_000.0)
    assert "alertd_mode" not in alert.to_sentry_event()["tags"]
