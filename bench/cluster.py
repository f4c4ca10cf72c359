"""The `cluster` stage of bench/run.py: alertd with its windows in one real `redis-server` on loopback.

In one run, alternating round by round (forward on even rounds, reversed on odd ones), three alertd:

* `memory`: per-pod mode (no Redis), the reference every ratio of this stage is paired with;
* `redis`: `ALERTD_REDIS_URL` to a redis-server of its own;
* `redis-hung`: the same, but its redis-server is SIGSTOPped once alertd is up: the first call times out
  (ALERTD_REDIS_TIMEOUT_SECONDS, 0.25 s; its duration is recorded), then alertd decides locally and its
  reconnect probe times out every <= 5 s in the background. Every round counts those timeouts. The
  redis-server gets SIGCONT in a `finally`, whatever happens.

Measured: single events (wrk -c32, as the ingest stage), 1000-event JSON batches (wrk -c4, as the batch
stage), unloaded ingest latency (wrk -c1: one request at a time, the cost of deciding before the 202),
alert latency (threshold-crossing 202 to the envelope at a loopback Sentry, as the latency stage, memory
and redis interleaved provider by provider), Redis commands per ingest request (INFO commandstats deltas
around a known number of requests) and Redis memory per tracked provider (MEMORY USAGE of its three keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from redis.asyncio import Redis

from bench import bodies
from bench.procs import CLOCK_TICKS, Proc, free_port, start_alertd

if TYPE_CHECKING:
    from bench.run import Run

PREFIX = "alertd:"  # the default ALERTD_REDIS_PREFIX; keys are {PREFIX+provider}:r, :b, :s (docs/CLUSTER.md)
COOLDOWN = "1"  # as the ingest stage: each of the 50 providers alerts once a second, throttled in between
OPS_SINGLE = 1000  # single-event POSTs around which INFO commandstats is read (smoke: 20)
OPS_BATCHES = 100  # 1000-event batches around which INFO commandstats is read (smoke: 5)


class RedisProcess:
    """One redis-server on a free loopback port, no persistence; ours: stopped by its pid."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.directory = directory
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None
        self.stopped = False  # SIGSTOPped and not yet resumed

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (make tools)")
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.directory), "--daemonize", "no", "--loglevel", "warning"]
        with (self.directory / f"{self.name}.log").open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            await asyncio.sleep(0.02)
        raise RuntimeError(f"{self.name} did not start on port {self.port}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of redis-server so far (from /proc, as bench/procs.py does for alertd)."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def hang(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        self.stopped = True

    def resume(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
        self.stopped = False

    async def stop(self) -> None:
        self.resume()
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


@contextlib.asynccontextmanager
async def redis_servers(directory: Path, *names: str) -> AsyncIterator[dict[str, RedisProcess]]:
    servers = {name: RedisProcess(name, directory) for name in names}
    try:
        for server in servers.values():
            await server.start()
        yield servers
    finally:
        for server in servers.values():
            server.resume()  # SIGCONT first, always, even on error
        await asyncio.gather(*(server.stop() for server in servers.values()))


async def status(session: aiohttp.ClientSession, proc: Proc) -> dict[str, Any]:
    async with session.get(f"http://127.0.0.1:{proc.port}/v1/status") as response:
        answer: dict[str, Any] = await response.json()
        return answer


async def wait_mode(session: aiohttp.ClientSession, proc: Proc, mode: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while (found := (await status(session, proc)).get("mode")) != mode:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name} is in mode {found!r}, not {mode!r}; see {proc.log_path}")
        await asyncio.sleep(0.05)


async def timed_post(session: aiohttp.ClientSession, url: str, body: bytes) -> float:
    """One POST that must be answered 202; seconds from send to the response read."""
    started = time.perf_counter()
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
        await response.read()
        if response.status != 202:
            raise RuntimeError(f"POST answered {response.status}")
    return time.perf_counter() - started


async def commandstats(client: Redis) -> dict[str, int]:
    """calls per command (`evalsha`, and the commands the script runs), without our own INFO."""
    info = await client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items() if k != "cmdstat_info"}


async def ops_per_request(
    session: aiohttp.ClientSession, client: Redis, proc: Proc, request_bodies: list[bytes], count: int
) -> dict[str, Any]:
    """INFO commandstats before and after `count` sequential POSTs (bodies cycled): calls per request."""
    before = await commandstats(client)
    for i in range(count):
        await timed_post(session, proc.url, request_bodies[i % len(request_bodies)])
    after = await commandstats(client)
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
    total = sum(delta.values())
    return {
        "requests": count,
        "evalsha_per_request": delta.get("evalsha", 0) / count,
        "commands_per_request": total / count,  # EVALSHA plus every command the script runs
        "by_command_per_request": {k: v / count for k, v in sorted(delta.items())},
    }


async def memory_per_provider(client: Redis, providers: list[str]) -> dict[str, Any]:
    """MEMORY USAGE of each provider's three keys (docs/CLUSTER.md), summed per provider."""
    per_key: dict[str, list[int]] = {"r": [], "b": [], "s": []}
    totals = []
    for provider in providers:
        total = 0
        for suffix, sizes in per_key.items():
            used = await client.memory_usage("{" + PREFIX + provider + "}:" + suffix) or 0
            sizes.append(used)
            total += used
        totals.append(total)
    ordered = sorted(totals)
    return {
        "providers": len(providers),
        "bytes_median": ordered[len(ordered) // 2],
        "bytes_max": ordered[-1],
        "by_key_median": {k: sorted(v)[len(v) // 2] for k, v in per_key.items()},
        "buckets_entries_max": None,
    }


async def alert_latency(
    run: Run, session: aiohttp.ClientSession, sentry: Any, procs: dict[str, Proc], providers: int
) -> dict[str, Any]:
    """The latency stage's measure on each of `procs`, interleaved provider by provider (order alternating)."""
    from bench.run import percentile, post  # noqa: PLC0415 - bench.run imports this module

    latencies: dict[str, list[float]] = {name: [] for name in procs}
    order = list(procs)
    for i in range(providers):
        for name in order if i % 2 == 0 else order[::-1]:
            provider = f"latency-{name}-{i:03d}"
            below = [{"provider": provider, "status": 503, "api_key": f"sk-{i}"}] * 4
            await post(session, procs[name].url, bodies.json_array(below))
            await post(session, procs[name].url, json.dumps({"provider": provider, "status": 503}).encode())
            answered = time.perf_counter()
            async with asyncio.timeout(10):
                while provider not in sentry.arrivals:
                    await sentry.next_arrival()
            latencies[name].append((sentry.arrivals[provider] - answered) * 1000)
    out = {}
    for name, values in latencies.items():
        ordered = sorted(values)
        out[name] = {
            "providers": len(ordered),
            "p50_ms": percentile(ordered, 50),
            "p99_ms": percentile(ordered, 99),
            "max_ms": ordered[-1],
        }
    return out


async def cluster(run: Run) -> None:  # noqa: PLR0912, PLR0915 - one flat sequence of servers and measures
    """The stage; see the module's docstring."""
    from bench.run import (  # noqa: PLC0415 - bench.run imports this module
        BASE,
        log,
        measured_wrk,
        median,
        paired_ratio,
        scrape,
        stamping_sentry,
        summarize,
        wrk,
    )

    s = run.settings
    source = run.variants[BASE]
    items = bodies.events(bodies.BATCH_EVENTS, providers=s.providers, keys=200)
    batch_file = run.scratch / "cluster-batch.json"
    batch_file.write_bytes(bodies.json_array(items))
    single_env = {"BENCH_PROVIDERS": str(s.providers)}
    batch_env = {"BENCH_BODY_FILE": str(batch_file), "BENCH_CONTENT_TYPE": "application/json"}
    result: dict[str, Any] = {"redis_version": None}
    procs: dict[str, Proc] = {}
    async with (
        run.session() as session,
        stamping_sentry() as sentry,
        redis_servers(run.scratch, "redis", "redis-hung") as servers,
    ):
        shared = Redis(host="127.0.0.1", port=servers["redis"].port, socket_timeout=5)
        try:
            result["redis_version"] = (await shared.info("server"))["redis_version"]
            base_env = {"SENTRY_DSN": sentry.dsn, "ALERTD_COOLDOWN_SECONDS": COOLDOWN}
            procs["memory"] = await start_alertd("cluster-memory", source, run.scratch, base_env, session)
            for name in ("redis", "redis-hung"):
                env = {**base_env, "ALERTD_REDIS_URL": servers[name].url}
                procs[name] = await start_alertd(f"cluster-{name}", source, run.scratch, env, session)
                await wait_mode(session, procs[name], "redis")
            for variant, variant_source in run.variants.items():  # --variant: cluster mode with a patched copy
                if variant != BASE:
                    env = {**base_env, "ALERTD_REDIS_URL": servers["redis"].url, "ALERTD_REDIS_PREFIX": f"{variant}:"}
                    name = f"redis+{variant}"
                    procs[name] = await start_alertd(f"cluster-{name}", variant_source, run.scratch, env, session)
                    await wait_mode(session, procs[name], "redis")
            if s.warmup:
                for proc in procs.values():
                    await wrk(proc.url, s.warmup, s.connections, single_env)

            # Hang the second Redis; the first call after it waits for the timeout, then alertd decides locally.
            servers["redis-hung"].hang()
            first = json.dumps(bodies.event(0)).encode()
            result["hung_first_call_s"] = await timed_post(session, procs["redis-hung"].url, first)
            result["hung_second_call_s"] = await timed_post(session, procs["redis-hung"].url, first)
            result["hung_mode"] = (await status(session, procs["redis-hung"]))["mode"]
            hung_started = time.monotonic()

            redis_ones = [name for name in procs if name == "redis" or name.startswith("redis+")]
            kinds = [("single", name) for name in procs]
            kinds += [("batch", name) for name in ["memory", *redis_ones]]
            kinds += [("unloaded", name) for name in ["memory", *redis_ones]]
            runs: dict[str, list[dict[str, Any]]] = {f"{kind}/{name}": [] for kind, name in kinds}
            errors_before = (await scrape(procs["redis-hung"], session)).get("alertd_backend_errors_total", 0.0)
            for round_ in range(s.rounds):
                for kind, name in kinds if round_ % 2 == 0 else kinds[::-1]:
                    proc = procs[name]
                    redis_cpu = servers["redis"].cpu_seconds()
                    if kind == "single":
                        one = await measured_wrk(proc, s.duration, s.connections, single_env)
                    elif kind == "batch":
                        one = await measured_wrk(proc, s.duration, s.batch_connections, batch_env)
                        one["events_per_s"] = one["rps"] * bodies.BATCH_EVENTS
                    else:
                        one = await measured_wrk(proc, s.duration, 1, single_env)
                    if name in redis_ones:
                        one["redis_cpu_us_per_request"] = (
                            (servers["redis"].cpu_seconds() - redis_cpu) / max(1, one["requests"]) * 1e6
                        )
                    if name == "redis-hung":
                        errors = (await scrape(proc, session)).get("alertd_backend_errors_total", 0.0)
                        one["backend_errors"] = errors - errors_before
                        errors_before = errors
                    runs[f"{kind}/{name}"].append(one)
                log(
                    f"  cluster round {round_ + 1}/{s.rounds}: "
                    + ", ".join(f"{k} {v[-1]['rps']:.0f}/s" for k, v in runs.items())
                )
            result["hung_seconds"] = time.monotonic() - hung_started
            result["hung_backend_errors_total"] = (await scrape(procs["redis-hung"], session)).get(
                "alertd_backend_errors_total", 0.0
            )
            result["hung_mode_at_end"] = (await status(session, procs["redis-hung"]))["mode"]
            servers["redis-hung"].resume()

            result["alert_latency"] = await alert_latency(
                run, session, sentry, {"memory": procs["memory"], "redis": procs["redis"]}, s.latency_providers
            )

            # Redis commands per request, then memory per provider (keys live max(WINDOW, COOLDOWN) + 1 s).
            singles = [json.dumps(bodies.event(i, providers=s.providers)).encode() for i in range(1009)]
            few = 20 if s.smoke else OPS_SINGLE
            batches = 5 if s.smoke else OPS_BATCHES
            result["redis_ops"] = {
                "single_event": await ops_per_request(session, shared, procs["redis"], singles, few),
                "batch_1000_events_50_providers": await ops_per_request(
                    session, shared, procs["redis"], [batch_file.read_bytes()], batches
                ),
            }
            providers = [f"provider-{i:02d}" for i in range(s.providers)]
            result["redis_memory_per_provider"] = await memory_per_provider(shared, providers)
            result["redis_memory_per_provider"]["buckets_entries_max"] = max(
                [await shared.llen("{" + PREFIX + p + "}:b") for p in providers]
            )
            result["redis_used_memory"] = (await shared.info("memory"))["used_memory"]
            result["redis_keys"] = await shared.dbsize()
            result["counters"] = {name: await scrape(proc, session) for name, proc in procs.items()}
        finally:
            servers["redis-hung"].resume()
            await asyncio.gather(*(p.stop() for p in procs.values()))
            await shared.aclose()
        result["redis_resumed"] = not servers["redis-hung"].stopped

    servers_out: dict[str, Any] = {}
    for key, key_runs in runs.items():
        kind, _, name = key.partition("/")
        summary = summarize(key_runs)
        summary["p90_ms"] = median([r["latency_us"]["p90"] / 1000 for r in key_runs])
        summary["max_ms"] = max(r["latency_us"]["max"] / 1000 for r in key_runs)
        if kind == "batch":
            summary["events_per_s"] = median([r["events_per_s"] for r in key_runs])
            summary["cpu_ns_per_event"] = summary["cpu_us_per_request"] * 1000 / bodies.BATCH_EVENTS
        if name != "memory":
            against = runs[f"{kind}/memory"]
            summary["ratio_to_memory"] = paired_ratio(key_runs, against, "rps")
            summary["cpu_ratio_to_memory"] = paired_ratio(key_runs, against, "cpu_us_per_request")
            summary["ratio_to_memory_by_round"] = [
                round(a["rps"] / b["rps"], 3) for a, b in zip(key_runs, against, strict=True)
            ]
        if name.startswith("redis+"):
            summary["ratio_to_redis"] = paired_ratio(key_runs, runs[f"{kind}/redis"], "rps")
            summary["cpu_ratio_to_redis"] = paired_ratio(key_runs, runs[f"{kind}/redis"], "cpu_us_per_request")
        if name == "redis" or name.startswith("redis+"):
            summary["redis_server_cpu_us_per_request"] = median([r["redis_cpu_us_per_request"] for r in key_runs])
        if name == "redis-hung":
            summary["backend_errors_by_round"] = [r["backend_errors"] for r in key_runs]
        servers_out[key] = summary
    result["servers"] = servers_out
    hung_errors = result["hung_backend_errors_total"]
    result["hung_timeouts_per_minute"] = (
        60 * hung_errors / result["hung_seconds"] if result["hung_seconds"] > 0 else math.nan
    )
    run.results["cluster"] = result
