"""Measure the RSS and CPU of a real `alertd serve`, idle and under a short load, for the k8s resources.

Run from the repository root with the project's venv:

    .venv/bin/python deploy/measure_resources.py [--seconds 20] [--concurrency 16] [--providers 10000] [--rate 0]

It starts `python -m alertd serve` on two free loopback ports (Sentry off, log to /dev/null), reads
/proc/PID/status (VmRSS, VmHWM) and /proc/PID/stat (utime + stime) of that process, and prints
one JSON object. The load POSTs one failure per request from `--concurrency` clients, spread over
`--providers` distinct providers (10,000 = the default ALERTD_MAX_PROVIDERS, so every window and
per-provider metric series exists at the end: the steady-state worst case for memory), each with an
API key so the anonymizer runs too. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

import aiohttp

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of `pid`, in KiB."""
    figures = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                figures[key] = int(value.split()[0])
    return figures


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds `pid` has used so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    # After the command name: fields[11] is utime, fields[12] stime (stat(5) fields 14 and 15).
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def wait_ready(session: aiohttp.ClientSession, url: str, deadline: float) -> None:
    """Poll /readyz until it answers 200."""
    while time.monotonic() < deadline:
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise TimeoutError(url)


async def load(url: str, seconds: float, concurrency: int, providers: int, rate: float) -> dict[str, Any]:
    """POST single failures from `concurrency` clients for `seconds`, at most `rate`/s (0: unpaced)."""
    sent = 0
    errors = 0
    start = time.monotonic()
    stop = start + seconds
    interval = concurrency / rate if rate > 0 else 0.0

    async def client(worker: int, session: aiohttp.ClientSession) -> None:
        nonlocal sent, errors
        i = worker
        while time.monotonic() < stop:
            event = {
                "provider": f"provider-{i % providers:05d}",
                "route": "/v1/chat/completions",
                "status": 503,
                "error_type": "upstream_5xx",
                "request_id": f"req-{worker}-{i}",
                "api_key": f"sk-live-{i % 97:04d}-abcdefghijklmnopqrstuvwxyz",
            }
            async with session.post(url, json=event) as response:
                await response.read()
                if response.status == 202:
                    sent += 1
                else:
                    errors += 1
            i += concurrency
            if interval:
                # Client `worker` sends its n-th request at start + n * interval: an open-loop pace.
                await asyncio.sleep(max(0.0, start + (i // concurrency) * interval - time.monotonic()))

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(w, session) for w in range(concurrency)))
    return {"requests": sent, "errors": errors}


async def scrape(url: str) -> str:
    """GET `url` as text."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.text()


async def ready(url: str) -> None:
    """Wait at most 30 s for `url` to answer 200."""
    async with aiohttp.ClientSession() as session:
        await wait_ready(session, url, time.monotonic() + 30)


def measure(seconds: float, concurrency: int, providers: int, idle: float, rate: float) -> dict[str, Any]:
    """Start alertd, measure it idle, load it, measure it again, stop it."""
    api, metrics = free_port(), free_port()
    env = {
        **os.environ,
        "ALERTD_LISTEN": f"127.0.0.1:{api}",
        "ALERTD_METRICS_LISTEN": f"127.0.0.1:{metrics}",
        "ALERTD_API_KEY_SALT": "measure-resources-salt",
        "ALERTD_LOG_LEVEL": "warning",
    }
    env.pop("SENTRY_DSN", None)
    proc = subprocess.Popen([sys.executable, "-m", "alertd", "serve"], env=env, stdout=subprocess.DEVNULL)
    try:
        asyncio.run(ready(f"http://127.0.0.1:{metrics}/readyz"))
        time.sleep(idle)
        idle_rss = rss_kib(proc.pid)
        idle_cpu_start, idle_wall_start = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(idle)
        idle_cpu = (cpu_seconds(proc.pid) - idle_cpu_start) / (time.monotonic() - idle_wall_start)
        cpu_start, wall_start = cpu_seconds(proc.pid), time.monotonic()
        counts = asyncio.run(load(f"http://127.0.0.1:{api}/v1/failures", seconds, concurrency, providers, rate))
        wall = time.monotonic() - wall_start
        busy_cpu = cpu_seconds(proc.pid) - cpu_start
        loaded_rss = rss_kib(proc.pid)
        text = asyncio.run(scrape(f"http://127.0.0.1:{metrics}/metrics"))
        tracked = next(
            float(line.split()[1]) for line in text.splitlines() if line.startswith("alertd_tracked_providers ")
        )
        proc.terminate()
        exit_code = proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return {
        "python": sys.version.split()[0],
        "idle": {"rss_mib": round(idle_rss["VmRSS"] / 1024, 1), "cpu_cores": round(idle_cpu, 4)},
        "load": {
            "seconds": round(wall, 1),
            "concurrency": concurrency,
            "providers": providers,
            "rate_limit_per_second": rate or None,
            "requests": counts["requests"],
            "errors": counts["errors"],
            "requests_per_second": round(counts["requests"] / wall),
            "cpu_cores": round(busy_cpu / wall, 3),
            "rss_mib_after": round(loaded_rss["VmRSS"] / 1024, 1),
            "rss_mib_peak": round(loaded_rss["VmHWM"] / 1024, 1),
            "tracked_providers": int(tracked),
        },
        "exit_code_after_sigterm": exit_code,
    }


def main() -> None:
    """Parse the arguments, measure, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the load phase")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument("--providers", type=int, default=10_000, help="distinct providers in the load")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of each idle sample")
    parser.add_argument("--rate", type=float, default=0.0, help="requests per second in all; 0: as fast as it goes")
    args = parser.parse_args()
    result = measure(args.seconds, args.concurrency, args.providers, args.idle, args.rate)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
