"""Secrets never leak: the raw API key, the ingest token and the DSN's key appear in no output."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alertd.anonymizer import Anonymizer
from alertd.event import JSON, decode_events
from tests.support.daemon import running_daemon
from tests.support.sentry_server import PUBLIC_KEY, LoopbackSentry

pytestmark = pytest.mark.anyio

TOKEN = "ingest-token-9f8e7d6c5b4a"
RAW_KEY = "sk-live-ZXCVBNMASDFGHJKLQWERTYUIOP1234567890"


async def test_no_secret_in_logs_metrics_query_answers_or_sentry_events(sentry: LoopbackSentry) -> None:
    env = {
        "ALERTD_THRESHOLD": "2",
        "ALERTD_INGEST_TOKEN": TOKEN,
        "ALERTD_API_KEY_SALT": "salt-1",
        "SENTRY_DSN": sentry.dsn,
    }
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with running_daemon(env) as daemon:
        failure = {"provider": "openai", "api_key": RAW_KEY, "message": "401 for key", "request_id": "r"}
        await daemon.post([failure] * 3, headers=auth)
        await daemon.post(b'{"provider": "x", "api_key": 5}', headers=auth)  # rejected, logged at debug
        await daemon.post({"provider": "bad key", "api_key": RAW_KEY}, headers=auth)
        await daemon.post({"provider": "p"}, headers={"Authorization": f"Bearer {TOKEN}x"})
        _, listing = await daemon.get_json("/v1/providers", headers=auth)
        _, one = await daemon.get_json("/v1/providers/openai", headers=auth)
        await sentry.wait_for_events(1)
        outputs = {
            "log": daemon.log_stream.getvalue(),
            "metrics": await daemon.scrape(),
            "query": json.dumps(listing) + json.dumps(one),
            "sentry": b"".join(sentry.raw_bodies).decode(),
        }
    assert "alert_fired" in outputs["log"]
    assert "openai" in outputs["sentry"]
    for where, text in outputs.items():
        assert RAW_KEY not in text, where
        assert TOKEN not in text, where
        assert "salt-1" not in text, where
        if where != "sentry":  # the SDK authenticates with the key in a header, never in the body
            assert PUBLIC_KEY not in text, where
    assert PUBLIC_KEY not in outputs["sentry"]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.text(min_size=24, max_size=300).filter(lambda k: k.strip() == k and "…" not in k))
def test_any_key_is_replaced_before_the_event_exists(key: str) -> None:
    body = json.dumps({"provider": "p", "api_key": key}).encode()
    [event] = decode_events(body, JSON, Anonymizer("s").anonymize)
    assert event.api_key is not None
    assert key not in event.api_key
    assert key not in repr(event)
    assert key not in json.dumps(event.to_dict())
