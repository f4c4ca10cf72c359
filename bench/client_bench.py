"""What alertd.client costs the router: `report()` in ns per call, and a router's overhead under load.

    .venv/bin/python -m bench.client_bench            # both parts, prints a table and one JSON line
    .venv/bin/python -m bench.client_bench --smoke    # a few seconds, to check that it runs

1. `report()`: the median of REPEATS timed loops of LOOP calls, in ns per call, for each path: a valid
   event buffered (AsyncReporter, Reporter), the buffer full with alertd down (the oldest is dropped), a
   non-ASCII provider (judged by alertd's own code), an invalid event (counted, dropped).
2. Router overhead: a real aiohttp router in a child process answers GET / (200) and, in the modes that
   report, calls `report()` on EVERY request, as if every upstream call failed (the worst case). wrk
   loads it over 127.0.0.1; the router's own CPU time per request comes from /proc. Modes: `none` (no
   reporter), `up` (a real `alertd serve` on a Unix socket receives everything), `down` (no alertd at
   all: every send fails, the buffer overflows). Each mode runs RUNS times; the medians are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- 1. report() -------------------------------------------------------------------------------------


def timed(call: Callable[[int], object], loop: int, repeats: int) -> float:
    """Median ns per call of `call(i)` over `repeats` loops of `loop` calls."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for i in range(loop):
            call(i)
        samples.append((time.perf_counter_ns() - start) / loop)
    return statistics.median(samples)


def report_costs(loop: int, repeats: int) -> dict[str, float]:
    from alertd.client import AsyncReporter, Reporter  # noqa: PLC0415

    out: dict[str, float] = {}

    async def in_a_loop() -> None:
        # The sender runs (started on the loop) but waits: a long interval, a batch size never reached.
        big = AsyncReporter("http://127.0.0.1:9", capacity=loop * repeats + 1, batch_size=10**9, interval=3600)
        full = AsyncReporter("http://127.0.0.1:9", capacity=1000, batch_size=10**9, interval=3600)
        async with big, full:
            out["async_buffered"] = timed(
                lambda i: big.report("openai", route="/v1/chat/completions", request_id="req-1", status=503),
                loop,
                repeats,
            )
            out["async_full_drop_oldest"] = timed(lambda i: full.report("openai", status=503), loop, repeats)
            out["async_non_ascii_provider"] = timed(lambda i: full.report("café-llm", status=503), loop, repeats)
            out["async_invalid"] = timed(lambda i: full.report("bad name", status=503), loop, repeats)
            await big.aclose(timeout=0)
            await full.aclose(timeout=0)

    asyncio.run(in_a_loop())
    # The sync Reporter's thread runs (alertd is down: port 9 refuses), with a long interval.
    sync = Reporter("http://127.0.0.1:9", capacity=loop * repeats + 1, batch_size=10**9, interval=3600)
    out["sync_buffered"] = timed(
        lambda i: sync.report("openai", route="/v1/chat/completions", request_id="req-1", status=503),
        loop,
        repeats,
    )
    sync.close(timeout=0.1)
    baseline = timed(lambda i: None, loop, repeats)
    out["loop_baseline"] = baseline
    return out


# --- 2. router overhead -------------------------------------------------------------------------------


def router_main(port: int, mode: str, address: str) -> None:
    """The router process: GET / answers 200; with a reporter, every request reports one failure."""
    from aiohttp import web  # noqa: PLC0415

    from alertd.client import AsyncReporter  # noqa: PLC0415

    async def main() -> None:
        reporter = AsyncReporter(address) if mode != "none" else None
        counter = 0

        async def handle(request: web.Request) -> web.Response:
            nonlocal counter
            counter += 1
            if reporter is not None:
                reporter.report("openai", route="/v1/chat/completions", request_id=f"r{counter}", status=503)
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        if reporter is not None:
            reporter.start()
        print("READY", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        if reporter is not None:
            await reporter.aclose(timeout=2.0)
            print("STATS", reporter.stats(), flush=True)
        await runner.cleanup()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def start(argv: list[str], env: dict[str, str], ready: str) -> subprocess.Popen[str]:
    """Start `argv`; wait until it prints a line containing `ready`."""
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT)  # noqa: S603
    assert process.stdout is not None
    deadline = time.monotonic() + 20
    for line in process.stdout:
        if ready in line:
            return process
        if time.monotonic() > deadline:
            break
    process.kill()
    raise RuntimeError(f"{argv} did not print {ready!r}")


def stop(process: subprocess.Popen[Any]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wrk(url: str, seconds: float, connections: int) -> dict[str, float]:
    result = subprocess.run(  # noqa: S603
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url],  # noqa: S607 - the bench's load tool
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    )
    text = result.stdout

    def latency_ms(label: str) -> float:
        match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
        assert match, text
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    return {"requests": requests, "rps": rate, "p50_ms": latency_ms("50%"), "p99_ms": latency_ms("99%")}


def router_run(mode: str, seconds: float, connections: int, workdir: Path) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALERTD_", "SENTRY_"))}
    env["PYTHONPATH"] = str(ROOT)
    sock = workdir / f"alertd-{mode}.sock"
    alertd = None
    if mode == "up":
        alertd_env = {
            **env,
            "ALERTD_LISTEN": f"unix:{sock}",
            "ALERTD_METRICS_LISTEN": "127.0.0.1:0",
            "ALERTD_LOG_LEVEL": "warning",
            "ALERTD_COOLDOWN_SECONDS": "3600",
        }
        alertd = subprocess.Popen([sys.executable, "-m", "alertd", "serve"], env=alertd_env, stdout=subprocess.DEVNULL)
        for _ in range(400):
            if sock.exists():
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("alertd did not create its socket")
    port = free_port()
    router = start(
        [
            sys.executable,
            "-m",
            "bench.client_bench",
            "router",
            "--port",
            str(port),
            "--mode",
            mode,
            "--alertd",
            f"unix:{sock}",
        ],
        env,
        "READY",
    )
    try:
        wrk(f"http://127.0.0.1:{port}/", 1, connections)  # warm-up
        cpu_before = cpu_seconds(router.pid)
        load = wrk(f"http://127.0.0.1:{port}/", seconds, connections)
        cpu = cpu_seconds(router.pid) - cpu_before
    finally:
        stop(router)
        if alertd is not None:
            stop(alertd)
    return {**load, "router_cpu_us_per_request": cpu / load["requests"] * 1e6}


def router_overhead(seconds: float, connections: int, runs: int) -> dict[str, dict[str, float]]:
    results: dict[str, list[dict[str, float]]] = {"none": [], "up": [], "down": []}
    with tempfile.TemporaryDirectory(prefix="alertd-client-bench-") as tmp:
        for _ in range(runs):
            for mode, found in results.items():  # interleaved: drift in the machine hits every mode alike
                found.append(router_run(mode, seconds, connections, Path(tmp)))
    return {
        mode: {key: statistics.median(run[key] for run in runs_) for key in runs_[0]} for mode, runs_ in results.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    router = sub.add_parser("router", help="(internal) the router process")
    router.add_argument("--port", type=int, required=True)
    router.add_argument("--mode", choices=["none", "up", "down"], required=True)
    router.add_argument("--alertd", required=True)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check that it runs")
    parser.add_argument("--runs", type=int, default=5, help="runs per router mode (default 5)")
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk duration per run (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    args = parser.parse_args()
    if args.command == "router":
        address = args.alertd if args.mode == "up" else args.alertd + ".nobody"
        router_main(args.port, args.mode, address)
        return
    loop, repeats = (20_000, 3) if args.smoke else (200_000, 9)
    costs = report_costs(loop, repeats)
    runs, seconds = (1, 1.0) if args.smoke else (args.runs, args.seconds)
    overhead = router_overhead(seconds, args.connections, runs)
    print(f"report() ns/call (median of {repeats} loops of {loop}):")
    for name, value in costs.items():
        print(f"  {name:28s} {value:8.0f}")
    print(f"router under wrk -t1 -c{args.connections} -d{seconds:g}s, median of {runs} runs:")
    print(f"  {'mode':6s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'router CPU us/req':>18s}")
    for mode, figures in overhead.items():
        print(
            f"  {mode:6s} {figures['rps']:9.0f} {figures['p50_ms']:8.2f} {figures['p99_ms']:8.2f}"
            f" {figures['router_cpu_us_per_request']:18.1f}"
        )
    result: dict[str, Any] = {"report_ns": costs, "router": overhead}
    print("BENCH_RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
