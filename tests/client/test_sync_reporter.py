"""Reporter (a daemon thread, standard-library HTTP) against a real alertd over real sockets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import aiohttp
import anyio
import pytest

from alertd.client import Reporter
from tests.client.helpers import balanced, failures, silent_server, until
from tests.support.daemon import running_daemon
from tests.support.process import alertd_serve

pytestmark = pytest.mark.anyio


async def test_reports_reach_alertd_over_tcp_with_a_token() -> None:
    async with running_daemon({"ALERTD_INGEST_TOKEN": "tok-123"}) as daemon:
        with Reporter(daemon.api, token="tok-123") as alertd:
            for i in range(7):
                assert alertd.report("openai", route="/v1/chat/completions", request_id=f"r{i}", status=502)
            await until(lambda: failures(daemon, "openai") == 7)
        stats = alertd.stats()
        assert (stats.sent, stats.dropped, stats.errors) == (7, 0, 0)
        assert len(daemon.logged("alert_fired")) == 1


async def test_over_a_unix_socket_and_close_flushes(tmp_path: Path) -> None:
    path = tmp_path / "alertd.sock"
    async with running_daemon({"ALERTD_LISTEN": f"unix:{path}"}) as daemon:
        alertd = Reporter(f"unix:{path}", interval=60.0)
        for _ in range(3):
            alertd.report("p", status=500)
        await anyio.to_thread.run_sync(alertd.close)
        assert failures(daemon, "p") == 3
        assert alertd.stats().sent == 3


async def test_batch_of_500_goes_without_waiting_for_the_timer() -> None:
    async with running_daemon() as daemon:
        with Reporter(daemon.api, interval=60.0) as alertd:
            for _ in range(500):
                alertd.report("p")
            await until(lambda: failures(daemon, "p") == 500)


async def test_report_never_waits_for_a_send_in_progress() -> None:
    """The sender is stuck inside a send to a hung alertd; report() from the router goes on regardless.

    If report() waited for the sender, this test would deadlock: the server answers nothing, ever.
    """
    async with silent_server() as (port, received):
        alertd = Reporter(f"http://127.0.0.1:{port}", timeout=60.0, interval=0.01, capacity=100)
        alertd.report("first")
        await until(lambda: b"first" in b"".join(received))  # the sender now blocks in recv()

        def router() -> None:
            for i in range(5000):
                assert alertd.report("p", request_id=str(i)) is True

        await anyio.to_thread.run_sync(router)
        stats = alertd.stats()
        assert stats.in_flight == 1
        assert stats.queued == 100
        assert stats.dropped_overflow == 4900
        assert balanced(stats)
        await anyio.to_thread.run_sync(lambda: alertd.close(timeout=0.1))
        assert alertd.stats().dropped_closed == 101


async def test_alertd_down_then_up_delivers_what_was_buffered(tmp_path: Path) -> None:
    path = tmp_path / "alertd.sock"
    alertd = Reporter(f"unix:{path}", interval=0.02, max_backoff=0.1)
    for _ in range(30):
        assert alertd.report("p")
    await until(lambda: alertd.stats().send_failures >= 2)
    assert alertd.stats().sent == 0
    async with running_daemon({"ALERTD_LISTEN": f"unix:{path}"}) as daemon:
        await until(lambda: failures(daemon, "p") == 30)
    stats = alertd.stats()
    assert (stats.sent, stats.dropped, stats.errors) == (30, 0, 0)
    await anyio.to_thread.run_sync(alertd.close)


async def _failures_over_unix(path: Path, provider: str) -> int:
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path))) as session,
        session.get(f"http://alertd/v1/providers/{provider}") as response,
    ):
        if response.status == 404:
            return 0
        total: int = (await response.json())["failures_total"]
        return total


async def test_alertd_killed_and_restarted_mid_run(tmp_path: Path) -> None:
    """A real `alertd serve` is SIGKILLed (its socket file stays behind) and a new one takes its place."""
    path = tmp_path / "alertd.sock"
    env = {"ALERTD_LISTEN": f"unix:{path}"}
    alertd = Reporter(f"unix:{path}", interval=0.02, max_backoff=0.1)
    try:
        async with alertd_serve(env) as first:
            for _ in range(50):
                alertd.report("p")
            assert await anyio.to_thread.run_sync(alertd.flush, 10.0)
            assert await _failures_over_unix(path, "p") == 50
            first.process.send_signal(signal.SIGKILL)
            await first.process.wait()
        assert path.exists()  # stale: nobody removed it
        for _ in range(70):
            alertd.report("p")
        await until(lambda: alertd.stats().send_failures >= 2)
        async with alertd_serve(env):
            assert await anyio.to_thread.run_sync(alertd.flush, 10.0)
            assert await _failures_over_unix(path, "p") == 70  # exactly what was reported while it was dead
        stats = alertd.stats()
        assert (stats.reported, stats.sent, stats.dropped, stats.errors) == (120, 120, 0, 0)
    finally:
        await anyio.to_thread.run_sync(alertd.close)


def test_nothing_raises_into_the_router() -> None:
    alertd = Reporter("not an address")
    weird: list[object] = [None, 3, b"bytes", "", " ", "a\nb", object()]
    for value in weird:
        assert alertd.report(value) is False  # type: ignore[arg-type]
    assert alertd.report("p", status=True) is False
    assert alertd.report("p", message=b"x") is False  # type: ignore[arg-type]
    assert alertd.report("p") is True  # queued: the bad address is counted when the thread sends
    assert alertd.flush(timeout=5.0)
    alertd.close()
    alertd.close()
    assert alertd.report("p") is False
    stats = alertd.stats()
    assert (stats.dropped_invalid, stats.dropped_rejected, stats.dropped_closed, stats.errors) == (9, 1, 1, 0)
    assert stats.reported == 11
    assert balanced(stats)


def test_a_forked_worker_starts_its_own_sender(tmp_path: Path) -> None:
    """gunicorn pre-forks: a Reporter made before fork() must work in the child (its own thread)."""
    script = textwrap.dedent(
        """
        import os, sys
        from alertd.client import Reporter
        alertd = Reporter(sys.argv[1], interval=0.01, max_backoff=0.05)
        alertd.report("parent")  # starts the parent's thread
        pid = os.fork()
        if pid == 0:
            fresh = alertd.stats()
            alertd.report("child")
            ok = alertd.flush(timeout=20.0)
            stats = alertd.stats()
            os._exit(0 if ok and fresh.reported == 0 and stats.sent == 1 and stats.reported == 1 else 3)
        _, status = os.waitpid(pid, 0)
        ok = alertd.flush(timeout=20.0)
        sys.exit(os.waitstatus_to_exitcode(status) or (0 if ok and alertd.stats().sent == 1 else 4))
        """
    )

    async def main() -> int:
        path = tmp_path / "alertd.sock"
        async with running_daemon({"ALERTD_LISTEN": f"unix:{path}"}) as daemon:
            code = await anyio.to_thread.run_sync(_run_script, script, f"unix:{path}")
            assert (failures(daemon, "parent"), failures(daemon, "child")) == (1, 1)
            return code

    assert anyio.run(main) == 0


def _run_script(script: str, address: str) -> int:
    env = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    return subprocess.run([sys.executable, "-c", script, address], env=env, timeout=60, check=False).returncode


def test_threads_report_concurrently_and_every_event_is_counted_once() -> None:
    alertd = Reporter("http://127.0.0.1:1", capacity=1000, interval=60.0)  # port 1: refused
    barrier = threading.Barrier(8)

    def burst() -> None:
        barrier.wait()
        for _ in range(5000):
            alertd.report("p")

    threads = [threading.Thread(target=burst) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = alertd.stats()
    assert stats.reported == 40_000
    assert balanced(stats)
    alertd.close(timeout=0.1)
    assert alertd.stats().dropped == 40_000
