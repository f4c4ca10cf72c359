"""Pods with skewed clocks (libfaketime) still share one window: every stamp is Redis's TIME."""

from __future__ import annotations

import glob
import time
from datetime import datetime

import aiohttp
import anyio
import pytest

from tests.cluster.test_three_processes import alerts, post, wait_for_mode
from tests.conftest import require_tool
from tests.support.process import alertd_serve
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio

HOUR = 3600.0


def skewed(offset: str) -> dict[str, str]:
    """Environment that makes a child's wall clock run `offset` away from the real one."""
    require_tool("faketime")
    found = sorted(
        glob.glob("/usr/lib/*/faketime/libfaketime.so.1") + glob.glob("/usr/*lib*/faketime/libfaketime.so.1")
    )
    assert found, "faketime is installed but libfaketime.so.1 was not found"
    return {"LD_PRELOAD": found[0], "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def test_skewed_pods_alert_on_redis_time(redis_srv: RedisServer) -> None:
    base = {"ALERTD_REDIS_URL": redis_srv.url, "ALERTD_THRESHOLD": "5", "ALERTD_WINDOW_SECONDS": "10"}
    async with (
        aiohttp.ClientSession() as session,
        alertd_serve({**base, **skewed("+1h")}) as ahead,
        alertd_serve({**base, **skewed("-1h")}) as behind,
        alertd_serve(base) as exact,
    ):
        children = [ahead, behind, exact]
        started = [epoch(child.lines[-1]["timestamp"]) for child in children]
        now = time.time()
        assert abs(started[0] - now - HOUR) < 60, "the first process's clock is an hour ahead"
        assert abs(started[1] - now + HOUR) < 60, "the second one's is an hour behind"
        assert abs(started[2] - now) < 60
        for child in children:
            await wait_for_mode(session, child, "redis")
        # Stamped by their own clocks, these five would be two hours apart: never 5 within 10 s.
        for i in range(5):
            await post(session, children[i % 3], "openai", f"o{i}")
        now = time.time()
        await behind.wait_for("alert_fired", within=5)
        await anyio.sleep(0.2)  # any other (wrong) alert would be printed by now
        fired = alerts(children)
        assert len(fired) == 1
        assert fired[0]["tags"]["request_id"] == "o4"  # decided in `behind`, an hour behind
        context = fired[0]["upstream_failure"]
        assert abs(epoch(context["last_failure_at"]) - now) < 5, "Redis's time, not the sender's"
        assert 0 <= epoch(context["last_failure_at"]) - epoch(context["first_failure_at"]) < 5
        assert context["count"] == 5
