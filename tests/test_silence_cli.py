"""`alertd silence ...` in-process (run_silence in a worker thread) against the silences API over real HTTP."""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path

import anyio
import pytest

from alertd.cli import main
from alertd.silence_cli import add_silence_commands, run_silence
from tests.test_silence_api import TOKEN, SilenceServer, silence_server

pytestmark = pytest.mark.anyio


def parser() -> argparse.ArgumentParser:
    """The `alertd` parser as cli.py builds it, with the silence commands only."""
    parser = argparse.ArgumentParser(prog="alertd")
    add_silence_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def env_for(server: SilenceServer, **extra: str) -> dict[str, str]:
    env = {"ALERTD_LISTEN": server.url.removeprefix("http://"), "USER": "tester", **extra}
    if server.token is not None:
        env.setdefault("ALERTD_INGEST_TOKEN", server.token)
    return env


async def cli(capsys: pytest.CaptureFixture[str], env: Mapping[str, str], *argv: str) -> tuple[int, str, str]:
    """Run `alertd silence argv...` in a thread (it blocks on HTTP while the server runs in this loop)."""
    args = parser().parse_args(["silence", *argv])
    code = await anyio.to_thread.run_sync(run_silence, args, env)
    out, err = capsys.readouterr()
    return code, out, err


async def test_add_list_expire(capsys: pytest.CaptureFixture[str]) -> None:
    async with silence_server() as server:
        env = env_for(server)
        code, out, err = await cli(capsys, env, "add", "bedrock-*", "--duration", "30m", "--comment", "AWS maintenance")
        assert (code, err) == (0, "")
        silence_id = out.strip()
        [listed] = await server.listing()
        assert listed["id"] == silence_id
        assert listed["providers"] == "bedrock-*"
        assert listed["comment"] == "AWS maintenance"
        assert listed["created_by"] == "tester"  # $USER by default
        assert listed["ends_at"] == "2027-01-15T08:30:00.000Z"

        code, out, err = await cli(capsys, env, "list")
        assert (code, err) == (0, "")
        header, row = out.strip().splitlines()
        assert header.split() == ["ID", "PROVIDERS", "ENDS_AT", "ACTIVE", "CREATED_BY", "COMMENT"]
        assert row.split() == [
            silence_id,
            "bedrock-*",
            "2027-01-15T08:30:00.000Z",
            "yes",
            "tester",
            "AWS",
            "maintenance",
        ]

        code, out, err = await cli(capsys, env, "list", "--json")
        assert code == 0
        assert json.loads(out) == [listed]

        server.clock.advance(5)
        code, out, err = await cli(capsys, env, "expire", silence_id)
        assert (code, out, err) == (0, "", "")
        [expired] = await server.listing()
        assert expired["active"] is False
        code, out, _ = await cli(capsys, env, "list")
        assert out.strip().splitlines()[1].split()[3] == "no"


async def test_created_by_and_plain_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    async with silence_server() as server:
        argv = ("add", "openai", "--duration", "90", "--comment", "deploy", "--created-by", "alice")
        code, out, _ = await cli(capsys, env_for(server), *argv)
        assert code == 0
        [listed] = await server.listing()
        assert (listed["id"], listed["created_by"]) == (out.strip(), "alice")
        assert listed["ends_at"] == "2027-01-15T08:01:30.000Z"
        code, out, _ = await cli(capsys, {"ALERTD_LISTEN": server.url[7:], "ALERTD_INGEST_TOKEN": TOKEN}, *argv[:6])
        assert code == 0
        by_id = {s["id"]: s for s in await server.listing()}
        assert by_id[out.strip()]["created_by"] is None  # no --created-by, no $USER


async def test_an_empty_list_prints_the_header(capsys: pytest.CaptureFixture[str]) -> None:
    async with silence_server() as server:
        code, out, _ = await cli(capsys, env_for(server), "list")
        assert code == 0
        assert out.strip().split() == ["ID", "PROVIDERS", "ENDS_AT", "ACTIVE", "CREATED_BY", "COMMENT"]
        code, out, _ = await cli(capsys, env_for(server), "list", "--json")
        assert json.loads(out) == []


async def test_a_comment_stays_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    async with silence_server() as server:
        await server.add(providers="p", duration_seconds=60, comment="line one\nline\ttwo")
        _, out, _ = await cli(capsys, env_for(server), "list")
        assert out.strip().splitlines()[1].endswith("line one line two")


async def test_refusals_exit_1_with_status_and_detail_and_never_print_the_token(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with silence_server() as server:
        wrong = env_for(server, ALERTD_INGEST_TOKEN="not-the-token-4711")
        for argv in (("list",), ("expire", "abc"), ("add", "p", "--duration", "1m", "--comment", "c")):
            code, out, err = await cli(capsys, wrong, *argv)
            assert code == 1
            assert out == ""
            assert "401" in err
            assert "Authorization: Bearer <token>" in err
            assert "not-the-token-4711" not in out + err
        code, out, err = await cli(capsys, env_for(server), "expire", "0123456789abcdef")
        assert code == 1
        assert "404" in err
        assert "no such silence" in err
        assert TOKEN not in out + err
        assert await server.listing() == []


async def test_unreachable_alertd_exits_1_naming_the_address(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    env = {"ALERTD_LISTEN": f"127.0.0.1:{port}", "ALERTD_INGEST_TOKEN": "secret-token-99"}
    code, out, err = await cli(capsys, env, "list")
    assert code == 1
    assert out == ""
    assert f"cannot reach alertd at ALERTD_LISTEN=127.0.0.1:{port}" in err
    assert "secret-token-99" not in err


async def test_a_unix_socket_listener(capsys: pytest.CaptureFixture[str]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = str(Path(directory) / "alertd.sock")
        async with silence_server(unix_path=path) as server:
            env = {"ALERTD_LISTEN": f"unix:{path}", "ALERTD_INGEST_TOKEN": TOKEN}
            code, out, err = await cli(capsys, env, "add", "openai", "--duration", "2h", "--comment", "c")
            assert (code, err) == (0, "")
            [listed] = await server.listing()
            assert listed["id"] == out.strip()
            assert listed["ends_at"] == "2027-01-15T10:00:00.000Z"
            code, out, _ = await cli(capsys, env, "list", "--json")
            assert [s["id"] for s in json.loads(out)] == [listed["id"]]


async def test_bad_config_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await cli(capsys, {"ALERTD_LISTEN": "nowhere"}, "list")
    assert code == 2
    assert out == ""
    assert "ALERTD_LISTEN='nowhere' is invalid" in err


@pytest.mark.parametrize("duration", ["0", "-5m", "soon", "5w", "1.5.h", "400d"])
def test_a_bad_duration_exits_2_naming_duration(capsys: pytest.CaptureFixture[str], duration: str) -> None:
    with pytest.raises(SystemExit) as caught:
        parser().parse_args(["silence", "add", "p", f"--duration={duration}", "--comment", "c"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "argument --duration: invalid duration" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["silence", "add", "p", "--duration", "1m"],  # no comment
        ["silence", "add", "p", "--comment", "c"],  # no duration
        ["silence", "add", "--duration", "1m", "--comment", "c"],  # no glob
        ["silence", "expire"],
        ["silence"],
        ["silence", "list", "--bogus"],
    ],
)
def test_missing_arguments_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parser().parse_args(argv)
    assert caught.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_a_bad_timeout_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["silence", "--timeout", "-1", "list"], environ={})
    assert exited.value.code == 2
    assert "--timeout" in capsys.readouterr().err


def test_daemon_settings_do_not_stop_the_silence_commands(capsys: pytest.CaptureFixture[str]) -> None:
    # SENTRY_ORG without a token stops the daemon (exit 2); the client reads only where alertd listens.
    code = main(["silence", "--timeout", "0.5", "list"], environ={"SENTRY_ORG": "acme", "ALERTD_LISTEN": "127.0.0.1:1"})
    assert code == 1  # nothing listens on port 1: refused, not a bad setting
    assert "SENTRY_ORG" not in capsys.readouterr().err
