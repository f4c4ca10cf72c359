"""The processes a benchmark run starts: alertd (the working tree, or a variant of it) and the reference.

Every process is ours: started here, stopped here by its pid, SIGKILLed if it does not stop in time.
Resource figures come from /proc (no psutil): VmRSS, utime + stime, and which event loop is mapped in.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = Path(__file__).resolve().parent / "reference.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    """A port nothing listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_environ() -> dict[str, str]:
    """os.environ without any ALERTD_*, SENTRY_* or PYTHONPATH that would leak into the processes."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("ALERTD_", "SENTRY_")) and k != "PYTHONPATH"}


@dataclass
class Proc:
    """One started server process."""

    name: str
    process: asyncio.subprocess.Process
    port: int
    ready_port: int
    log_path: Path
    started_at: float
    ready_after: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/failures"

    def rss_mib(self) -> float:
        """Resident set size, MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for {self.name}")

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far (all threads)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def event_loop(self) -> str:
        """`uvloop` when the process has uvloop's extension mapped, else `asyncio`."""
        maps = Path(f"/proc/{self.pid}/maps").read_text()
        return "uvloop" if "uvloop/loop." in maps else "asyncio"

    async def stop(self) -> None:
        """SIGTERM, wait for the drain, SIGKILL after STOP_TIMEOUT."""
        if self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


async def wait_ready(proc: Proc, session: aiohttp.ClientSession, within: float = READY_TIMEOUT) -> float:
    """Poll GET /readyz every 2 ms until 200; returns seconds since the process was spawned."""
    url = f"http://127.0.0.1:{proc.ready_port}/readyz"
    deadline = time.perf_counter() + within
    while time.perf_counter() < deadline:
        if proc.process.returncode is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.process.returncode}; see {proc.log_path}")
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    proc.ready_after = time.perf_counter() - proc.started_at
                    return proc.ready_after
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.002)
    raise RuntimeError(f"{proc.name} not ready within {within}s; see {proc.log_path}")


async def _spawn(
    name: str, argv: list[str], env: dict[str, str], log_dir: Path, cwd: Path
) -> tuple[asyncio.subprocess.Process, Path, float]:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT, env=env, cwd=cwd
        )
    return process, log_path, started


async def start_alertd(
    name: str,
    source: Path,
    log_dir: Path,
    settings: dict[str, str],
    session: aiohttp.ClientSession | None = None,
) -> Proc:
    """`python -m alertd serve` with `source` (a folder holding an `alertd` package) first on the path.

    The working directory is `log_dir`, so `-m` does not put the repository's own alertd first.
    With `session`, waits for /readyz.
    """
    port, metrics_port = free_port(), free_port()
    env = clean_environ()
    env.update(
        {
            "PYTHONPATH": str(source),
            "ALERTD_LISTEN": f"127.0.0.1:{port}",
            "ALERTD_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
            "ALERTD_API_KEY_SALT": "bench-salt",
            "ALERTD_SHUTDOWN_TIMEOUT_SECONDS": "1",
            **settings,
        }
    )
    process, log_path, started = await _spawn(name, [sys.executable, "-m", "alertd", "serve"], env, log_dir, log_dir)
    proc = Proc(name, process, port, metrics_port, log_path, started, extra=settings)
    if session is not None:
        await wait_ready(proc, session)
    return proc


async def start_reference(name: str, loop: str, log_dir: Path, session: aiohttp.ClientSession | None = None) -> Proc:
    """bench/reference.py on `loop` (asyncio or uvloop)."""
    port = free_port()
    env = clean_environ()
    process, log_path, started = await _spawn(
        name, [sys.executable, str(REFERENCE), str(port), loop], env, log_dir, log_dir
    )
    proc = Proc(name, process, port, port, log_path, started)
    if session is not None:
        await wait_ready(proc, session)
    return proc
