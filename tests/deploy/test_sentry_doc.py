"""SENTRY.md states facts of the code: the example event and the anonymization it describes."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

from alertd.anonymizer import Anonymizer
from alertd.metrics import SENTRY_OUTCOMES
from alertd.sentry import QUEUE_SIZE
from tests.deploy.sentry_example import EXAMPLE_API_KEY, EXAMPLE_SALT, example_alert, example_event_json

SENTRY_MD = Path(__file__).resolve().parents[2] / "SENTRY.md"


def doc() -> str:
    return SENTRY_MD.read_text(encoding="utf-8")


def test_the_example_event_is_what_alertd_builds() -> None:
    match = re.search(r"<!-- example-event -->\n```json\n(.*?)\n```", doc(), re.DOTALL)
    assert match is not None, "SENTRY.md lost its example-event block"
    assert match.group(1) == example_event_json(), "regenerate: .venv/bin/python -m tests.deploy.sentry_example"


def test_the_documented_anonymization_is_the_real_one() -> None:
    digest = hmac.new(EXAMPLE_SALT.encode(), EXAMPLE_API_KEY.encode(), hashlib.sha256).hexdigest()
    by_formula = f"{EXAMPLE_API_KEY[: min(8, len(EXAMPLE_API_KEY) // 4)]}…{digest[:12]}"
    assert Anonymizer(EXAMPLE_SALT).anonymize(EXAMPLE_API_KEY) == by_formula
    assert example_alert().tags()["api_key"] == by_formula
    assert by_formula in doc()
    assert EXAMPLE_API_KEY not in doc().replace(f"`{EXAMPLE_API_KEY}`", "")  # only named once, as the input


def test_every_delivery_outcome_and_the_queue_size_are_documented() -> None:
    text = doc()
    for outcome in SENTRY_OUTCOMES:
        assert f"`{outcome}`" in text, outcome
    assert f"{QUEUE_SIZE} envelopes" in text
