"""Hot reload of the rules file with real files: the startup load, SIGHUP, polling, a ConfigMap symlink swap."""

from __future__ import annotations

import io
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from prometheus_client import CollectorRegistry

from alertd.errors import RulesError
from alertd.logs import make_logger
from alertd.rules import RuleSet, rules_from_environment
from alertd.rules_watch import RulesReloader

pytestmark = pytest.mark.anyio

ENV = rules_from_environment(5, 300.0, 60.0, 300.0, loaded_at=0.0).defaults
POLL = 0.02


def rules_text(threshold: int) -> str:
    return f'[[rule]]\nproviders = "openai"\nthreshold = {threshold}\n'


def replace(path: Path, text: str) -> None:
    """Write the file as an editor or kubelet does, atomically: a poll never sees it half written."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


class Applied:
    """The apply callback: remembers each RuleSet and wakes whoever waits for the next one."""

    def __init__(self) -> None:
        self.rule_sets: list[RuleSet] = []
        self.event = anyio.Event()

    def __call__(self, rules: RuleSet) -> None:
        self.rule_sets.append(rules)
        self.event.set()

    async def next(self) -> RuleSet:
        with anyio.fail_after(10):
            await self.event.wait()
        self.event = anyio.Event()
        return self.rule_sets[-1]


class LogStream(io.StringIO):
    """The log's output; wakes whoever waits for the next `rules_reload_failed` line."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = anyio.Event()

    def write(self, text: str, /) -> int:
        if '"rules_reload_failed"' in text:
            self.failed.set()
        return super().write(text)

    async def next_failure(self) -> None:
        with anyio.fail_after(10):
            await self.failed.wait()
        self.failed = anyio.Event()


class Clock:
    """A wall clock that moves one second per reading."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


class Harness:
    def __init__(self, path: Path, poll_seconds: float = POLL) -> None:
        self.path = path
        self.registry = CollectorRegistry()
        self.stream = LogStream()
        self.applied = Applied()
        self.clock = Clock()
        self.reloader = RulesReloader(
            str(path),
            ENV,
            apply=self.applied,
            log=make_logger("info", "json", stream=self.stream),
            registry=self.registry,
            poll_seconds=poll_seconds,
            wall_clock=self.clock,
        )

    def count(self, result: str) -> float:
        value = self.registry.get_sample_value("alertd_rules_reloads_total", {"result": result})
        assert value is not None
        return value

    @property
    def last_success(self) -> float:
        value = self.registry.get_sample_value("alertd_rules_last_reload_success_timestamp_seconds")
        assert value is not None
        return value

    def lines(self, event: str) -> list[dict[str, Any]]:
        found = [json.loads(line) for line in self.stream.getvalue().splitlines()]
        return [line for line in found if line["event"] == event]

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            await tasks.start(self.reloader.run)
            yield
            tasks.cancel_scope.cancel()


def threshold_of(rules: RuleSet | None) -> int:
    assert rules is not None
    return rules.rule_for("openai").threshold


async def test_initial_load_is_counted_and_not_applied(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(rules_text(3))
    h = Harness(path)
    assert (h.count("success"), h.count("failure"), h.last_success) == (0, 0, 0)
    rules = h.reloader.load_initial()
    assert threshold_of(rules) == 3
    assert rules.source == str(path)
    assert h.reloader.current is rules
    assert (h.count("success"), h.count("failure")) == (1, 0)
    assert h.last_success == rules.loaded_at == h.clock.now
    assert h.applied.rule_sets == []
    assert len(h.lines("rules_loaded")) == 1


@pytest.mark.parametrize("content", [None, "[[rule]]\nproviders = 3\n"])
async def test_initial_load_failure_raises_and_is_counted(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "rules.toml"
    if content is not None:
        path.write_text(content)
    h = Harness(path)
    with pytest.raises(RulesError) as caught:
        h.reloader.load_initial()
    assert caught.value.path == str(path)
    assert (h.count("success"), h.count("failure"), h.last_success) == (0, 1, 0)
    assert h.reloader.current is None


async def test_sighup_rereads_an_unchanged_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(rules_text(3))
    h = Harness(path)
    first = h.reloader.load_initial()
    assert h.reloader.reload("SIGHUP") is True
    second = h.applied.rule_sets[-1]
    assert second is not first
    assert second is h.reloader.current
    assert threshold_of(second) == 3
    assert (h.count("success"), h.count("failure")) == (2, 0)
    assert h.last_success == second.loaded_at > first.loaded_at
    [line] = h.lines("rules_reloaded")
    assert line["reason"] == "SIGHUP"
    assert line["source"] == str(path)
    assert line["rules"] == 1


async def test_sighup_with_a_broken_file_keeps_the_old_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(rules_text(3))
    h = Harness(path)
    first = h.reloader.load_initial()
    success_at = h.last_success
    path.write_text('[[rule]]\nproviders = "openai"\nthreshold = 20000\n')
    assert h.reloader.reload("SIGHUP") is False
    assert h.reloader.current is first
    assert h.applied.rule_sets == []
    assert (h.count("success"), h.count("failure")) == (1, 1)
    assert h.last_success == success_at
    [line] = h.lines("rules_reload_failed")
    assert line["file"] == str(path)
    assert line["line"] == 3
    assert line["reason"] == "rule[1].threshold: 20000 is not an integer from 1 to 10000"
    assert line["error"] == f"{path}:3: rule[1].threshold: 20000 is not an integer from 1 to 10000"
    assert line["level"] == "error"
    # Fixed: the next SIGHUP applies it and moves the timestamp.
    path.write_text(rules_text(4))
    assert h.reloader.reload("SIGHUP") is True
    assert threshold_of(h.reloader.current) == 4
    assert h.last_success > success_at


async def test_a_changed_file_is_picked_up_without_a_signal(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(rules_text(3))
    h = Harness(path)
    h.reloader.load_initial()
    async with h.running():
        replace(path, rules_text(12))
        rules = await h.applied.next()
    assert threshold_of(rules) == 12
    assert h.reloader.current is rules
    assert (h.count("success"), h.count("failure")) == (2, 0)
    assert h.last_success == rules.loaded_at
    [line] = h.lines("rules_reloaded")
    assert line["reason"] == "changed"


async def test_a_change_that_keeps_size_and_mtime_is_seen_by_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(rules_text(3))
    before = path.stat()
    h = Harness(path)
    h.reloader.load_initial()
    # Changed in place before the poller starts, so that no poll sees it half written.
    path.write_text(rules_text(7))  # same length, same inode
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    async with h.running():
        rules = await h.applied.next()
    assert threshold_of(rules) == 7


async def test_kubernetes_configmap_symlink_swap_is_picked_up(tmp_path: Path) -> None:
    # The layout kubelet makes: rules.toml -> ..data/rules.toml, ..data -> ..2026_<timestamp>.
    old = tmp_path / "..2026_11_27_10_00_00.1"
    old.mkdir()
    (old / "rules.toml").write_text(rules_text(3))
    (tmp_path / "..data").symlink_to(old.name)
    path = tmp_path / "rules.toml"
    path.symlink_to("..data/rules.toml")
    h = Harness(path)
    assert threshold_of(h.reloader.load_initial()) == 3
    async with h.running():
        new = tmp_path / "..2026_11_27_10_05_00.2"
        new.mkdir()
        (new / "rules.toml").write_text(rules_text(9))
        (tmp_path / "..data_tmp").symlink_to(new.name)
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        rules = await h.applied.next()
    assert threshold_of(rules) == 9
    assert rules.source == str(path)
    assert (h.count("success"), h.count("failure")) == (2, 0)


async def test_a_broken_file_is_reported_once_and_keeps_the_old_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(rules_text(3))
    h = Harness(path)
    first = h.reloader.load_initial()
    success_at = h.last_success
    async with h.running():
        replace(path, '[[rule]]\nproviders = "openai"\nthreshold = 3\ncolour = "red"\n')
        await h.stream.next_failure()
        assert h.count("failure") == 1
        assert h.reloader.current is first
        assert h.last_success == success_at
        # Many polls see the same broken bytes: still one line and one failure. Then a fix is applied.
        polls_later = h.clock.now
        await anyio.sleep(POLL * 10)
        replace(path, rules_text(5))
        rules = await h.applied.next()
    assert polls_later == h.clock.now - 1  # the wall clock was read once more: for the fix, not for the polls
    assert threshold_of(rules) == 5
    assert (h.count("success"), h.count("failure")) == (2, 1)
    assert h.last_success == rules.loaded_at > success_at
    [line] = h.lines("rules_reload_failed")
    assert (line["file"], line["line"]) == (str(path), 4)
    assert line["reason"].startswith("rule[1].colour: unknown key")
    assert line["trigger"] == "changed"
    assert h.applied.rule_sets == [rules]


async def test_a_vanished_file_is_a_failure_and_its_return_a_success(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(rules_text(3))
    h = Harness(path)
    first = h.reloader.load_initial()
    async with h.running():
        path.unlink()
        await h.stream.next_failure()
        assert h.count("failure") == 1
        assert h.reloader.current is first
        replace(path, rules_text(6))
        rules = await h.applied.next()
    assert threshold_of(rules) == 6
    [line] = h.lines("rules_reload_failed")
    assert line["line"] is None
    assert "No such file or directory" in line["reason"]


async def test_run_without_an_initial_load_loads_on_its_first_poll(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(rules_text(8))
    h = Harness(path)
    async with h.running():
        rules = await h.applied.next()
    assert threshold_of(rules) == 8


@pytest.mark.parametrize("poll_seconds", [0.0, -1.0, 5.5])
async def test_poll_interval_is_at_most_five_seconds(tmp_path: Path, poll_seconds: float) -> None:
    with pytest.raises(ValueError, match="poll_seconds"):
        Harness(tmp_path / "rules.toml", poll_seconds=poll_seconds)
