"""ALERTD_LISTEN=unix:/path: the ingest API on a Unix domain socket, as in a pod's shared emptyDir."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import aiohttp
import pytest

from alertd.config import Config, UnixAddress
from alertd.errors import ConfigError, ListenError
from tests.support.daemon import running_daemon

pytestmark = pytest.mark.anyio


async def post_unix(path: Path, body: object) -> tuple[int, object]:
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path))) as session,
        session.post("http://alertd/v1/failures", json=body) as response,
    ):
        return response.status, await response.json()


async def test_ingest_over_a_unix_socket_with_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "alertd.sock"
    async with running_daemon({"ALERTD_LISTEN": f"unix:{path}", "ALERTD_SOCKET_MODE": "0600"}) as daemon:
        assert daemon.listening.api == UnixAddress(str(path))
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert await post_unix(path, [{"provider": "p"}] * 5) == (202, {"accepted": 5})
        assert len(daemon.logged("alert_fired")) == 1
    assert not path.exists()  # removed on shutdown


async def test_default_mode_is_0660(tmp_path: Path) -> None:
    path = tmp_path / "alertd.sock"
    async with running_daemon({"ALERTD_LISTEN": f"unix:{path}"}):
        assert stat.S_IMODE(path.stat().st_mode) == 0o660


async def test_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "alertd.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what a killed process leaves behind
    assert path.exists()
    async with running_daemon({"ALERTD_LISTEN": f"unix:{path}"}):
        assert await post_unix(path, {"provider": "p"}) == (202, {"accepted": 1})


async def test_live_socket_and_regular_file_are_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "alertd.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen(1)
        with pytest.raises(ExceptionGroup) as info:
            async with running_daemon({"ALERTD_LISTEN": f"unix:{path}"}):
                pass
        assert info.group_contains(ListenError, match="another process is listening")
    path.unlink()
    path.write_text("not a socket")
    with pytest.raises(ExceptionGroup) as info:
        async with running_daemon({"ALERTD_LISTEN": f"unix:{path}"}):
            pass
    assert info.group_contains(ListenError, match="not a socket")
    assert path.read_text() == "not a socket"


@pytest.mark.parametrize("value", ["unix:relative.sock", "unix:", "unix:/" + "x" * 200])
def test_bad_unix_paths_are_config_errors(value: str) -> None:
    with pytest.raises(ConfigError, match="ALERTD_LISTEN"):
        Config.from_environ({"ALERTD_LISTEN": value})


def test_bad_socket_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ALERTD_SOCKET_MODE"):
        Config.from_environ({"ALERTD_SOCKET_MODE": "rw-rw----"})
    assert Config.from_environ({"ALERTD_SOCKET_MODE": "0640"}).socket_mode == 0o640
