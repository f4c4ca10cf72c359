"""Alert building: from a threshold trigger to the facts logged and the Sentry event sent. Pure."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alertd.event import FailureEvent
from alertd.timefmt import iso
from alertd.tracker import Trigger
from alertd.window import DEFAULT_LEVEL

MAX_TAG_KEY = 32
MAX_TAG_VALUE = 200
_TAG_KEY_OK = re.compile(r"[A-Za-z0-9_.:-]+")
_TAG_KEY_BAD = re.compile(r"[^A-Za-z0-9_.:-]")
FINGERPRINT_PREFIX = "alertd-upstream-failure"
# Every alert carries the tag KIND_TAG, so that a Sentry search selects exactly alertd's alert issues.
KIND_TAG = "alertd_kind"
KIND = "upstream_failure"
TEST_KIND = "test"


def clean_tag_key(key: str) -> str:
    """Make `key` a valid Sentry tag key: at most 32 characters of [A-Za-z0-9_.:-]."""
    if len(key) <= MAX_TAG_KEY and _TAG_KEY_OK.fullmatch(key):
        return key
    return _TAG_KEY_BAD.sub("_", key)[:MAX_TAG_KEY]


def clean_tag_value(value: object) -> str | None:
    """Make `value` a tag value Sentry keeps unchanged, or None when nothing is left.

    Sentry keeps values of 1-200 characters without newlines; control characters become spaces.
    """
    if value is None:
        return None
    text = str(value)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else " " for c in text)
    text = text.strip()
    if len(text) > MAX_TAG_VALUE:
        text = text[: MAX_TAG_VALUE - 1].rstrip() + "…"
    return text or None


def format_duration(seconds: float) -> str:
    """A short human duration: `45s`, `2m 5s`, `1h 3m`, `2d 4h`."""
    total = max(0, round(seconds))
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{value}{unit}" for value, unit in parts if value]
    return " ".join(shown[:2]) or "0s"


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert for one provider; times are epoch seconds."""

    event_id: str
    provider: str
    count: int
    window_seconds: float
    threshold: int
    first_failure_at: float
    last_failure_at: float
    throttled_since_last: int
    trigger: FailureEvent
    recent: tuple[tuple[float, FailureEvent], ...]
    test: bool = False
    # This provider's earlier alerts that could not be delivered and that no delivered alert has reported.
    undelivered_since_last: int = 0
    # Decided by this process alone while the shared (Redis) tracker was unreachable.
    fallback: bool = False
    # The firing episode: when it opened (epoch seconds; None for a test alert) and this alert's rank in it.
    episode_started_at: float | None = None
    episode_alerts: int = 1
    # The Sentry level: the tier's level under a tiered rule; `tier` names the tier in the message and tags.
    level: str = DEFAULT_LEVEL
    tier: str | None = None

    @property
    def opens_episode(self) -> bool:
        """True for the alert that opened its provider's firing episode."""
        return self.episode_alerts <= 1

    @property
    def message(self) -> str:
        """The one-line summary used as the Sentry message and in the log.

        It says what a notification must show: the episode it opens or how long that has been open,
        and how many threshold hits were throttled and alerts lost since the previous alert.
        """
        prefix = "[TEST ALERT from alertd send-test] " if self.test else ""
        head = (
            f"{prefix}Upstream provider {self.provider} failed {_plural(self.count, 'time', 'times')} "
            f"in the last {self.window_seconds:g}s (threshold {self.threshold})"
        )
        if self.tier is not None:
            head = f"{prefix}[{self.tier}] {head.removeprefix(prefix)}"
        if self.opens_episode or self.episode_started_at is None:
            head += ", opens a firing episode"
        else:
            head += f", firing for {format_duration(self.last_failure_at - self.episode_started_at)}"
        notes = []
        if self.throttled_since_last:
            hits = _plural(self.throttled_since_last, "more threshold hit", "more threshold hits")
            notes.append(f"{hits} throttled since the last alert")
        if self.undelivered_since_last:
            lost = _plural(self.undelivered_since_last, "earlier alert", "earlier alerts")
            notes.append(f"{lost} could not be delivered")
        return f"{head} ({'; '.join(notes)})" if notes else head

    def tags(self) -> dict[str, str]:
        """Sentry tags from the triggering failure, cleaned to survive Sentry's normalization."""
        trigger = self.trigger
        raw = {
            KIND_TAG: TEST_KIND if self.test else KIND,
            "provider": self.provider,
            "route": trigger.route,
            "request_id": trigger.request_id,
            "error_type": trigger.error_type,
            "status_code": trigger.status,
            "api_key": trigger.api_key,
        }
        if self.tier is not None:
            raw["severity"] = self.tier
        if self.test:
            raw["alertd_test"] = "true"
        if self.fallback:
            raw["alertd_mode"] = "fallback"
        tags = {}
        for key, value in raw.items():
            cleaned = clean_tag_value(value)
            if cleaned is not None:
                tags[clean_tag_key(key)] = cleaned
        return tags

    def context(self) -> dict[str, Any]:
        """The `upstream_failure` context: the facts behind the alert."""
        return {
            "provider": self.provider,
            "count": self.count,
            "window_seconds": self.window_seconds,
            "threshold": self.threshold,
            "first_failure_at": iso(self.first_failure_at),
            "last_failure_at": iso(self.last_failure_at),
            "throttled_since_last_alert": self.throttled_since_last,
            "undelivered_since_last_alert": self.undelivered_since_last,
            "episode": {
                "started_at": None if self.episode_started_at is None else iso(self.episode_started_at),
                "opens": self.opens_episode,
                "alert_number": self.episode_alerts,
            },
            "recent_failures": [{"at": iso(at), **event.to_dict()} for at, event in self.recent],
        }

    def to_sentry_event(self) -> dict[str, Any]:
        """The Sentry event payload: level error, one issue per provider via the fingerprint."""
        return {
            "event_id": self.event_id,
            "level": self.level,
            "logger": "alertd",
            "message": self.message,
            "fingerprint": [FINGERPRINT_PREFIX, self.provider],
            "tags": self.tags(),
            "contexts": {"upstream_failure": self.context()},
        }

    def to_log_fields(self) -> dict[str, Any]:
        """The same facts as the Sentry event, for the `alert_fired` log line."""
        return {
            "event_id": self.event_id,
            "message": self.message,
            "fingerprint": [FINGERPRINT_PREFIX, self.provider],
            "tags": self.tags(),
            "upstream_failure": self.context(),
        }


def build_alert(
    trigger: Trigger,
    epoch_offset: float,
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    *,
    test: bool = False,
) -> Alert:
    """Turn a trigger (monotonic times) into an alert (epoch times); `epoch_offset` is wall - monotonic."""
    threshold, level = trigger.rule.levels[trigger.tier]
    return Alert(
        event_id=new_id(),
        provider=trigger.provider,
        count=trigger.count,
        window_seconds=trigger.rule.window,
        threshold=threshold,
        first_failure_at=trigger.first_at + epoch_offset,
        last_failure_at=trigger.at + epoch_offset,
        throttled_since_last=trigger.throttled_since_last,
        trigger=trigger.event,
        recent=tuple((at + epoch_offset, event) for at, event in trigger.recent),
        test=test,
        fallback=trigger.fallback,
        episode_started_at=None if trigger.episode_started_at is None else trigger.episode_started_at + epoch_offset,
        episode_alerts=trigger.episode_alerts,
        level=level,
        tier=level if trigger.rule.tiers else None,
    )
