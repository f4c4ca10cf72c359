"""The example Sentry event in SENTRY.md, built by alertd's real code.

    .venv/bin/python -m tests.deploy.sentry_example     # prints the JSON block SENTRY.md shows

tests/deploy/test_sentry_doc.py fails when SENTRY.md and this output differ, so the document
changes when `alertd.alert` does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from alertd.alert import Alert, build_alert
from alertd.anonymizer import Anonymizer
from alertd.event import FailureEvent
from alertd.tracker import Trigger
from alertd.window import Rule

EXAMPLE_SALT = "example-salt-do-not-use"
EXAMPLE_API_KEY = "sk-live-51HxQ2eZvKYlo2C0aBcDeFgHiJkLmNoP"  # made up; 40 characters
EXAMPLE_EVENT_ID = "6f1d2c3b4a5948e7b1c2d3e4f5a6b7c8"
START = datetime(2026, 11, 27, 2, 14, 3, tzinfo=UTC).timestamp()


def example_alert() -> Alert:
    """Five 503s from openai, 7.5 s apart, with the default rule (5 in 300 s, 60 s cooldown)."""
    api_key = Anonymizer(EXAMPLE_SALT).anonymize(EXAMPLE_API_KEY)
    recent = tuple(
        (
            START + i * 7.5,
            FailureEvent(
                provider="openai",
                route="/v1/chat/completions",
                request_id=f"req_8f3a{i}c",
                api_key=api_key,
                error_type="upstream_5xx",
                status=503,
                message="upstream returned 503 Service Unavailable",
            ),
        )
        for i in range(5)
    )
    last_at, last = recent[-1]
    trigger = Trigger(
        provider="openai",
        event=last,
        at=last_at,
        count=5,
        first_at=recent[0][0],
        throttled_since_last=0,
        recent=recent,
        rule=Rule(threshold=5, window=300.0, cooldown=60.0),
        episode_started_at=last_at,
    )
    return build_alert(trigger, epoch_offset=0.0, new_id=lambda: EXAMPLE_EVENT_ID)


def example_event_json() -> str:
    """`to_sentry_event()` of the example alert, as SENTRY.md prints it."""
    return json.dumps(example_alert().to_sentry_event(), indent=2, ensure_ascii=False)


if __name__ == "__main__":
    print(example_event_json())
