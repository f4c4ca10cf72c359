"""Rules reloads over a real `alertd serve`: SIGHUP, a broken file, a ConfigMap-style symlink swap."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from tests.support.process import COMMAND, Child, alertd_serve, child_env

pytestmark = pytest.mark.anyio


async def post(child: Child, events: list[dict[str, Any]]) -> None:
    async with aiohttp.ClientSession() as session, session.post(f"{child.api_url}/v1/failures", json=events) as answer:
        assert answer.status == 202


async def get(child: Child, path: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(f"{child.api_url}{path}") as response:
        assert response.status == 200
        return await response.json()


async def scrape(child: Child) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{child.metrics_url}/metrics") as response:
        return await response.text()


def fired(child: Child) -> list[dict[str, Any]]:
    return [line for line in child.lines if line.get("event") == "alert_fired"]


def rules(threshold: int) -> str:
    return f"""
[defaults]
threshold = {threshold}
window_seconds = 300

[[rule]]
providers = "quiet-*"
threshold = 100
"""


async def test_sighup_puts_a_changed_threshold_in_force_and_keeps_the_window(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(rules(5))
    async with alertd_serve({"ALERTD_RULES_FILE": str(path)}) as child:
        assert (await child.wait_for("rules_loaded"))["rules"] == 1
        await post(child, [{"provider": "openai"}] * 3)
        path.write_text(rules(4))
        child.process.send_signal(signal.SIGHUP)
        reloaded = await child.wait_for("rules_reloaded")
        assert reloaded["reason"] == "SIGHUP"
        assert (await get(child, "/v1/rules"))["defaults"]["threshold"] == 4
        assert fired(child) == []
        await post(child, [{"provider": "openai"}])  # the 4th failure: judged by the new rule
        [alert] = await child.wait_for_count("alert_fired", 1)
        assert alert["upstream_failure"]["threshold"] == 4
        await post(child, [{"provider": "quiet-one"}] * 10)  # the [[rule]] still matches first
        await anyio.sleep(0.2)
        assert len(fired(child)) == 1


async def test_a_broken_file_keeps_the_old_rules_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(rules(2))
    async with alertd_serve({"ALERTD_RULES_FILE": str(path)}) as child:
        await child.wait_for("rules_loaded")
        path.write_text("[defaults]\nthreshold = 3\n\n[[rule]]\nproviders = 'x'\nthreshold = 20000\n")
        child.process.send_signal(signal.SIGHUP)
        failed = await child.wait_for("rules_reload_failed")
        assert failed["file"] == str(path)
        assert failed["line"] == 6
        assert "threshold" in failed["reason"]
        assert failed["error"].startswith(f"{path}:6: ")
        assert (await get(child, "/v1/rules"))["defaults"]["threshold"] == 2
        assert 'alertd_rules_reloads_total{result="failure"} 1.0' in await scrape(child)
        await post(child, [{"provider": "p"}] * 2)  # the old threshold, 2, still holds
        await child.wait_for_count("alert_fired", 1)


async def test_a_configmap_symlink_swap_is_picked_up_without_a_signal(tmp_path: Path) -> None:
    first, second = tmp_path / "..2026_11_27_a", tmp_path / "..2026_11_27_b"
    first.mkdir()
    second.mkdir()
    (first / "rules.toml").write_text(rules(5))
    (second / "rules.toml").write_text(rules(7))
    os.symlink(first.name, tmp_path / "..data")
    os.symlink("..data/rules.toml", tmp_path / "rules.toml")
    async with alertd_serve({"ALERTD_RULES_FILE": str(tmp_path / "rules.toml")}) as child:
        await child.wait_for("rules_loaded")
        # What kubelet does: a new ..data link, renamed over the old one in one step.
        os.symlink(second.name, tmp_path / "..data_tmp")
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        reloaded = await child.wait_for("rules_reloaded", within=15)
        assert reloaded["reason"] != "SIGHUP"
        assert (await get(child, "/v1/rules"))["defaults"]["threshold"] == 7
        assert 'alertd_rules_reloads_total{result="success"} 2.0' in await scrape(child)


def run_alertd(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], env=child_env(env), capture_output=True, text=True, timeout=60, check=False
    )


def test_a_bad_rules_file_stops_serve_and_check_config_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[defaults]\nthreshold = 3\nwindow_seconds = [\n")
    for command in ("check-config", "serve"):
        done = run_alertd(command, env={"ALERTD_RULES_FILE": str(path)})
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"alertd: {path}:")
        assert "Traceback" not in done.stderr


def test_check_config_prints_the_effective_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(rules(9))
    done = run_alertd("check-config", env={"ALERTD_RULES_FILE": str(path)})
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["config"]["ALERTD_RULES_FILE"] == str(path)
    assert shown["rules"]["defaults"]["threshold"] == 9
    assert shown["rules"]["rules"][0]["providers"] == ["quiet-*"]
