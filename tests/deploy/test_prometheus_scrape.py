"""A real Prometheus scrapes a real alertd and reads back the alert counter through its HTTP API.

Prometheus (the Debian package) runs on 127.0.0.1 with a 1 s scrape interval and its TSDB in the
test's temporary directory; alertd runs in-process on loopback ports. Everything is bounded in time.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from anyio.abc import Process

from tests.conftest import require_tool
from tests.support.daemon import FakeClock, RunningDaemon, running_daemon

pytestmark = pytest.mark.anyio

FAIL = {"provider": "e2e-openai", "route": "/v1/chat/completions", "status": 503, "error_type": "upstream_5xx"}
QUIET = {"provider": "e2e-quiet", "status": 502}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def running_prometheus(tmp_path: Path, target_port: int) -> AsyncIterator[str]:
    """Start Prometheus scraping 127.0.0.1:`target_port` every second; yield its base URL."""
    binary = require_tool("prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: alertd\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target_port}']\n"
    )
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        process: Process = await anyio.open_process(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=log,
        )
        try:
            yield f"http://127.0.0.1:{port}"
        except BaseException:
            print(log_path.read_text(errors="replace")[-4000:])  # pytest shows it with the failure
            raise
        finally:
            process.terminate()
            with anyio.move_on_after(10, shield=True):
                await process.wait()
            if process.returncode is None:
                process.kill()
                with anyio.CancelScope(shield=True):
                    await process.wait()
            await process.aclose()


async def query(session: aiohttp.ClientSession, base: str, promql: str) -> list[dict[str, Any]]:
    """An instant query; returns data.result."""
    async with session.get(f"{base}/api/v1/query", params={"query": promql}) as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def wait_for_value(
    session: aiohttp.ClientSession, base: str, promql: str, expected: float, within: float = 20.0
) -> None:
    """Poll Prometheus until `promql` has exactly one series whose value is `expected`."""
    seen: list[dict[str, Any]] | str = "nothing yet"
    with anyio.move_on_after(within):
        while True:
            try:
                seen = await query(session, base, promql)
            except aiohttp.ClientConnectionError as exc:
                seen = f"no answer: {exc}"  # Prometheus is still starting
            if isinstance(seen, list) and len(seen) == 1 and float(seen[0]["value"][1]) == expected:
                return
            await anyio.sleep(0.2)
    pytest.fail(f"Prometheus never answered {promql} with {expected} within {within:g} s; last answer: {seen}")


async def post_failures(daemon: RunningDaemon, event: dict[str, Any], count: int) -> None:
    for i in range(count):
        assert await daemon.post({**event, "request_id": f"{event['provider']}-{i}"}) == (202, {"accepted": 1})


async def test_prometheus_reads_alertd_alert_counter(tmp_path: Path) -> None:
    clock = FakeClock()
    with anyio.fail_after(100):
        async with (
            running_daemon(clock=clock) as daemon,
            running_prometheus(tmp_path, daemon.listening.metrics.port) as prometheus,
        ):
            session = daemon.session
            # Threshold 5: the fifth failure alerts, the sixth is inside the 60 s cooldown.
            await post_failures(daemon, FAIL, 6)
            await post_failures(daemon, QUIET, 4)
            await wait_for_value(session, prometheus, 'up{job="alertd"}', 1)
            await wait_for_value(session, prometheus, 'alertd_alerts_total{provider="e2e-openai"}', 1)
            await wait_for_value(session, prometheus, 'alertd_alerts_total{provider="e2e-quiet"}', 0)
            await wait_for_value(session, prometheus, 'alertd_alerts_throttled_total{provider="e2e-openai"}', 1)
            # Past the cooldown the next failure alerts again: Prometheus sees the counter move to 2.
            clock.advance(61)
            await post_failures(daemon, FAIL, 1)
            await wait_for_value(session, prometheus, 'alertd_alerts_total{provider="e2e-openai"}', 2)
            await wait_for_value(session, prometheus, 'alertd_failures_total{provider="e2e-openai"}', 7)
            # The value Prometheus stored is the one alertd exports.
            assert 'alertd_alerts_total{provider="e2e-openai"} 2.0' in await daemon.scrape()
            [alerted] = await query(session, prometheus, "sum(increase(alertd_alerts_total[1m])) > 0")
            assert float(alerted["value"][1]) > 0
            assert len(daemon.logged("alert_fired")) == 2
