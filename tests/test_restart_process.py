"""ALERTD_STATE_FILE for real: `alertd serve` stopped (SIGTERM or SIGKILL), then a new process on the same file."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from tests.support.process import Child, alertd_serve

pytestmark = pytest.mark.anyio

RAW_KEY = "sk-proj-0123456789abcdefghijklmnopRAWKEY"


def state_env(path: Path, **extra: str) -> dict[str, str]:
    return {"ALERTD_STATE_FILE": str(path), "ALERTD_THRESHOLD": "5", **extra}


@asynccontextmanager
async def daemon(env: dict[str, str]) -> AsyncIterator[tuple[Child, aiohttp.ClientSession]]:
    async with alertd_serve(env) as child, aiohttp.ClientSession() as session:
        yield child, session


async def post(child: Child, session: aiohttp.ClientSession, body: Any) -> None:
    async with session.post(f"{child.api_url}/v1/failures", json=body) as response:
        assert response.status == 202, await response.text()


async def stop(child: Child, sig: signal.Signals = signal.SIGTERM) -> None:
    child.process.send_signal(sig)
    with anyio.fail_after(15):
        code = await child.process.wait()
    assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL)


async def metric(child: Child, session: aiohttp.ClientSession, name: str, provider: str) -> float:
    async with session.get(f"{child.metrics_url}/metrics") as response:
        text = await response.text()
    prefix = f'{name}{{provider="{provider}"}} '
    values = [float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix)]
    assert len(values) == 1, f"no series {prefix!r}"
    return values[0]


def contents(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def exists(path: Path) -> bool:
    return path.exists()


def events(child: Child, event: str) -> list[dict[str, Any]]:
    return [line for line in child.lines if line.get("event") == event]


async def test_a_burst_in_progress_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    async with daemon(state_env(path)) as (first, session):
        await post(first, session, [{"provider": "openai"}] * 3)
        await stop(first)
    [saved] = events(first, "state_saved")
    assert (saved["reason"], saved["providers"], saved["bytes"]) == ("shutdown", 1, path.stat().st_size)
    assert not events(first, "alert_fired")
    names = [line["event"] for line in first.lines]
    assert names.index("alertd_draining") < names.index("state_saved") < names.index("alertd_stopped")
    async with daemon(state_env(path)) as (second, session):
        restored = await second.wait_for("state_restored")
        assert (restored["providers"], restored["silences"]) == (1, 0)
        assert restored["age_seconds"] >= 0
        await post(second, session, [{"provider": "openai"}] * 2)
        fired = await second.wait_for("alert_fired")
        assert fired["upstream_failure"]["count"] == 5
        assert fired["upstream_failure"]["episode"]["opens"] is True
        await stop(second)
    assert len(events(second, "alert_fired")) == 1


async def test_a_restored_cooldown_throttles_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    async with daemon(state_env(path)) as (first, session):
        await post(first, session, [{"provider": "openai"}] * 5)
        await first.wait_for("alert_fired")
        await stop(first)
    async with daemon(state_env(path)) as (second, session):
        await second.wait_for("state_restored")
        assert await metric(second, session, "alertd_alerts_throttled_total", "openai") == 0
        await post(second, session, [{"provider": "openai"}] * 3)
        assert await metric(second, session, "alertd_alerts_throttled_total", "openai") == 3
        async with session.get(f"{second.api_url}/v1/providers/openai") as response:
            shown = await response.json()
        assert (shown["state"], shown["failures_in_window"], shown["alerts_total"]) == ("alerting", 8, 1)
        assert shown["episode"]["state"] == "firing"
        await stop(second)
    assert not events(second, "alert_fired")


async def test_an_open_episode_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    env = state_env(path, ALERTD_THRESHOLD="2", ALERTD_COOLDOWN_SECONDS="0")
    async with daemon(env) as (first, session):
        await post(first, session, [{"provider": "bedrock"}] * 2)
        opened = await first.wait_for("alert_fired")
        assert "opens a firing episode" in opened["message"]
        await stop(first)
    async with daemon(env) as (second, session):
        await second.wait_for("state_restored")
        async with session.get(f"{second.metrics_url}/metrics") as response:
            assert 'alertd_provider_firing{provider="bedrock"} 1.0' in await response.text()
        await post(second, session, {"provider": "bedrock"})
        fired = await second.wait_for("alert_fired")
        assert "firing for" in fired["message"]
        episode = fired["upstream_failure"]["episode"]
        assert (episode["opens"], episode["alert_number"]) == (False, 2)
        # The same start, to the millisecond the log shows, give or take one: the time went from the monotonic
        # clock to epoch seconds and back, with the two clocks' offset read at two moments.
        started = datetime.fromisoformat(episode["started_at"])
        opened_at = datetime.fromisoformat(opened["upstream_failure"]["episode"]["started_at"])
        assert abs((started - opened_at).total_seconds()) <= 0.002
        await stop(second)


async def test_a_silence_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    async with daemon(state_env(path)) as (first, session):
        body = {"providers": "open*", "duration_seconds": 3600, "comment": "maintenance"}
        async with session.post(f"{first.api_url}/v1/silences", json=body) as response:
            assert response.status == 201
            silence_id = (await response.json())["id"]
        await stop(first)
    async with daemon(state_env(path)) as (second, session):
        restored = await second.wait_for("state_restored")
        assert restored["silences"] == 1
        async with session.get(f"{second.api_url}/v1/silences") as response:
            [listed] = (await response.json())["silences"]
        assert (listed["id"], listed["active"], listed["comment"]) == (silence_id, True, "maintenance")
        await post(second, session, [{"provider": "openai"}] * 5)
        silenced = await second.wait_for("alert_silenced")
        assert silenced["silence_id"] == silence_id
        await stop(second)
    assert not events(second, "alert_fired")


async def test_a_corrupt_file_is_moved_aside_and_alertd_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    garbage = b'{"version": 1, "providers": [{"provider": "openai", "recent": "soon"'
    path.write_bytes(garbage)
    async with daemon(state_env(path)) as (child, session):
        corrupt = await child.wait_for("state_file_corrupt")
        assert "not JSON" in corrupt["reason"]
        moved = Path(corrupt["moved_to"])
        assert moved.parent == tmp_path
        assert moved.name.startswith("state.json.corrupt-")
        assert contents(moved) == garbage
        assert not exists(path)
        assert not events(child, "state_restored")
        await post(child, session, [{"provider": "openai"}] * 5)
        await child.wait_for("alert_fired")
        await stop(child)
    assert json.loads(path.read_bytes())["version"] == 1


async def test_a_wrongly_shaped_file_is_moved_aside_too(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    wrong = json.dumps({"version": 1, "saved_at": 1.0, "providers": [{"provider": "x"}], "silences": []}).encode()
    path.write_bytes(wrong)
    async with daemon(state_env(path)) as (child, _):
        corrupt = await child.wait_for("state_file_corrupt")
        assert "recent" in corrupt["reason"]
        assert contents(corrupt["moved_to"]) == wrong
        await stop(child)


async def test_sigkill_after_a_periodic_snapshot_keeps_that_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    env = state_env(path, ALERTD_STATE_SNAPSHOT_SECONDS="0.2")
    async with daemon(env) as (first, session):
        await post(first, session, [{"provider": "openai"}] * 3)
        saved = await first.wait_for("state_saved")
        assert (saved["reason"], saved["providers"]) == ("periodic", 1)
        await stop(first, signal.SIGKILL)
    assert not events(first, "alertd_stopped")
    async with daemon(env) as (second, session):
        restored = await second.wait_for("state_restored")
        assert restored["providers"] == 1
        await post(second, session, [{"provider": "openai"}] * 2)
        fired = await second.wait_for("alert_fired")
        assert fired["upstream_failure"]["count"] == 5
        await stop(second)


async def test_the_file_holds_no_raw_api_key(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    async with daemon(state_env(path)) as (child, session):
        await post(child, session, [{"provider": "openai", "api_key": RAW_KEY, "request_id": "r1"}] * 3)
        await stop(child)
    data = path.read_bytes()
    assert RAW_KEY.encode() not in data
    assert b"0123456789abcdef" not in data
    [provider] = json.loads(data)["providers"]
    shown = [sample["event"]["api_key"] for sample in provider["samples"]]
    assert len(shown) == 3
    assert all(key.startswith("sk-proj-\u2026") for key in shown)
