"""`alertd silence ...` as an operator runs it: a real child process, against the API over real sockets."""

from __future__ import annotations

import json

import anyio
import pytest

from tests.support.process import COMMAND, alertd_serve, child_env
from tests.test_silence_api import TOKEN, SilenceServer, silence_server

pytestmark = pytest.mark.anyio


async def alertd(env: dict[str, str], *argv: str) -> tuple[int, str, str]:
    result = await anyio.run_process([*COMMAND, *argv], env=child_env(env), check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def env_for(server: SilenceServer) -> dict[str, str]:
    return {"ALERTD_LISTEN": server.url.removeprefix("http://"), "ALERTD_INGEST_TOKEN": TOKEN}


async def test_add_list_expire_as_a_process() -> None:
    async with silence_server() as server:
        env = env_for(server)
        argv = ("silence", "add", "openai", "--duration", "2h", "--comment", "deploy", "--created-by", "ops")
        code, out, err = await alertd(env, *argv)
        assert (code, err) == (0, "")
        silence_id = out.strip()
        [listed] = await server.listing()
        assert (listed["id"], listed["created_by"], listed["active"]) == (silence_id, "ops", True)
        code, out, err = await alertd(env, "silence", "list", "--json")
        assert code == 0
        assert json.loads(out) == [listed]
        code, out, _ = await alertd(env, "silence", "list")
        assert code == 0
        assert silence_id in out.splitlines()[1]
        code, out, err = await alertd(env, "silence", "expire", silence_id)
        assert (code, out, err) == (0, "", "")
        assert (await server.listing())[0]["active"] is False


async def test_exit_codes_as_a_process() -> None:
    async with silence_server() as server:
        env = env_for(server)
        code, out, err = await alertd(env, "silence", "expire", "unknown")
        assert code == 1
        assert "404" in err
        assert TOKEN not in out + err
        code, out, err = await alertd(env, "silence", "add", "p", "--duration", "soon", "--comment", "c")
        assert code == 2
        assert "--duration" in err
        code, _, err = await alertd(env, "silence", "add", "p", "--duration", "5m")
        assert code == 2
        assert "--comment" in err
        wrong = {**env, "ALERTD_INGEST_TOKEN": "wrong-token-1234"}
        code, out, err = await alertd(wrong, "silence", "list")
        assert code == 1
        assert "401" in err
        assert "wrong-token-1234" not in out + err
        assert await server.listing() == []


async def test_against_a_real_alertd_serve() -> None:
    env = {"ALERTD_INGEST_TOKEN": TOKEN}
    async with alertd_serve(env) as child:
        assert child.api is not None
        client_env = {**env, "ALERTD_LISTEN": str(child.api)}
        code, out, err = await alertd(client_env, "silence", "add", "bedrock-*", "--duration", "1h", "--comment", "c")
        assert code == 0, err
        silence_id = out.strip()
        code, out, err = await alertd(client_env, "silence", "list", "--json")
        assert code == 0, err
        [listed] = json.loads(out)
        assert (listed["id"], listed["providers"], listed["active"]) == (silence_id, "bedrock-*", True)
        code, _, err = await alertd(client_env, "silence", "expire", silence_id)
        assert code == 0, err
        code, out, _ = await alertd(client_env, "silence", "list", "--json")
        assert json.loads(out)[0]["active"] is False
