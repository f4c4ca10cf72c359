"""alertd/state.py: the atomic write, the read, moving a bad file aside, and StateKeeper's skips and threads."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from alertd import state
from alertd.config import Config
from alertd.daemon import build_service, state_keeper
from alertd.errors import StateError
from alertd.event import FailureEvent
from alertd.logs import make_logger
from alertd.silences import SilenceStore
from alertd.state import StateKeeper, move_aside, read_state, write_atomic
from alertd.tracker import MemoryTracker
from alertd.window import Rule
from tests.support.daemon import FakeClock

WALL = 1_800_000_000.0


def test_write_atomic_replaces_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_atomic(str(path), b"one")
    write_atomic(str(path), b"two")
    assert path.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["state.json"]
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    write_atomic(str(path), b"old")

    def broken(_fd: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="I/O error"):
        write_atomic(str(path), b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["state.json"]


def test_read_and_move_aside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    assert read_state(str(path)) is None
    path.write_bytes(b"\x00bytes")
    assert read_state(str(path)) == b"\x00bytes"
    moved = move_aside(str(path), WALL)
    assert moved == f"{path}.corrupt-20270115T080000.000000Z"
    assert Path(moved).read_bytes() == b"\x00bytes"
    assert not path.exists()
    path.write_bytes(b"12345")
    monkeypatch.setattr(state, "MAX_STATE_BYTES", 4)
    with pytest.raises(StateError, match="larger than 4 bytes"):
        read_state(str(path))


class Keeper:
    """A StateKeeper over a fake clock, its tracker and silences, and its log."""

    def __init__(self, path: Path) -> None:
        self.clock = FakeClock(1000.0)
        self.tracker = MemoryTracker(Rule(), 100, self.clock)
        self.silences = SilenceStore()
        self.stream = io.StringIO()
        log = make_logger("debug", "json", stream=self.stream)
        self.keeper = StateKeeper(
            str(path), self.tracker, self.silences, log, clock=self.clock, wall_clock=lambda: WALL
        )

    def logged(self, event: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.stream.getvalue().splitlines()]
        return [line for line in lines if line["event"] == event]


@pytest.mark.anyio
async def test_a_periodic_snapshot_is_skipped_when_nothing_changed(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    k = Keeper(path)
    await k.keeper.restore()
    assert k.logged("state_file_absent")
    assert await k.keeper.save("periodic") is False
    assert not path.exists()
    k.tracker.record_now([FailureEvent("openai")])
    assert await k.keeper.save("periodic") is True
    assert await k.keeper.save("periodic") is False
    k.silences.add("openai", WALL + 60.0, "c", None, WALL)
    assert await k.keeper.save("periodic") is True
    k.clock.advance(1.0)
    k.tracker.cleanup_now()  # nothing idle yet: no change
    assert await k.keeper.save("periodic") is False
    assert await k.keeper.save("shutdown", force=True) is True
    saved = k.logged("state_saved")
    assert [line["reason"] for line in saved] == ["periodic", "periodic", "shutdown"]
    assert saved[-1]["bytes"] == path.stat().st_size
    assert (saved[-1]["providers"], saved[-1]["silences"]) == (1, 1)
    # A new keeper over the file: restored, and nothing to write until something changes.
    again = Keeper(path)
    await again.keeper.restore()
    [restored] = again.logged("state_restored")
    assert (restored["providers"], restored["silences"], restored["age_seconds"]) == (1, 1, 0)
    assert await again.keeper.save("periodic") is False


@pytest.mark.anyio
async def test_the_file_is_written_in_a_worker_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[threading.Thread] = []
    original = state.write_atomic

    def spy(path: str, data: bytes) -> None:
        threads.append(threading.current_thread())
        original(path, data)

    monkeypatch.setattr(state, "write_atomic", spy)
    k = Keeper(tmp_path / "state.json")
    await k.keeper.save("shutdown", force=True)
    assert threads
    assert threads[0] is not threading.main_thread()


@pytest.mark.anyio
async def test_an_unreadable_file_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.mkdir()  # reading a directory fails with an OSError
    k = Keeper(path)
    await k.keeper.restore()
    [corrupt] = k.logged("state_file_corrupt")
    assert "IsADirectoryError" in corrupt["reason"]
    # Moved, not removed: the original name is free and the directory sits under the new one.
    assert os.listdir(tmp_path) == [Path(corrupt["moved_to"]).name]
    assert k.tracker.tracked() == 0


@pytest.mark.anyio
async def test_a_write_into_a_missing_directory_raises_for_the_caller_to_log(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "state.json"
    k = Keeper(path)
    await k.keeper.restore()
    assert k.logged("state_file_absent")
    k.tracker.record_now([FailureEvent("openai")])
    with pytest.raises(FileNotFoundError):
        await k.keeper.save("periodic")


def test_cluster_mode_ignores_the_state_file_with_one_warning(tmp_path: Path) -> None:
    env = {"ALERTD_STATE_FILE": str(tmp_path / "state.json"), "ALERTD_REDIS_URL": "redis://127.0.0.1:1/0"}
    config = Config.from_environ(env)
    stream = io.StringIO()
    log = make_logger("debug", "json", stream=stream)
    service = build_service(config, log, CollectorRegistry())
    assert state_keeper(config, service, log) is None
    [line] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert (line["event"], line["level"], line["path"]) == ("state_file_ignored", "warning", env["ALERTD_STATE_FILE"])
    per_pod = Config.from_environ({"ALERTD_STATE_FILE": env["ALERTD_STATE_FILE"]})
    keeper = state_keeper(per_pod, build_service(per_pod, log, CollectorRegistry()), log)
    assert keeper is not None
    assert keeper.silences is not None
    assert state_keeper(Config.from_environ({}), build_service(per_pod, log, CollectorRegistry()), log) is None
