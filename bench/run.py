"""alertd's benchmark suite. `make bench` (full, ~5 min) or `make bench-smoke` (seconds, figures not meaningful).

    python -m bench.run [--smoke] [--stages a,b] [--variant NAME=DIR ...] [--out FILE]

Stages: startup, micro, ingest (single events, and Sentry isolation), batch, latency, memory, cluster
(alertd with one real redis-server on loopback, against memory mode; bench/cluster.py).
Everything runs on 127.0.0.1; each load run is bounded in time (wrk -d) and each client loop in count.
Servers are compared in the same run, alternating, several rounds; we quote medians and ratios.
A variant is a folder holding a patched copy of the `alertd` package (see bench/experiment.py); it is
measured next to the working tree's alertd, alternating, in ingest, batch and micro (and in cluster, in cluster mode).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from bench import bodies
from bench.cluster import cluster as cluster_stage
from bench.procs import ROOT, Proc, free_port, start_alertd, start_reference, wait_ready
from tests.support.sentry_server import LoopbackSentry, loopback_sentry, serve_sentry

LUA = Path(__file__).resolve().parent / "wrk" / "ingest.lua"
RESULTS = ROOT / "bench" / "results"
STAGES = ("startup", "micro", "ingest", "batch", "latency", "memory", "cluster")
BASE = "alertd"


@dataclass(frozen=True)
class Settings:
    """How much of everything; FULL for `make bench`, SMOKE for CI."""

    rounds: int = 5
    duration: int = 5  # seconds per wrk run
    warmup: int = 1  # seconds of wrk per server before the first round
    connections: int = 32
    batch_connections: int = 4
    providers: int = 50
    latency_providers: int = 200
    memory_events: int = 1_000_000
    memory_providers: int = 50_000
    startup_runs: int = 5
    decode_seconds: float = 0.5
    smoke: bool = False
    isolation: bool = True  # also run the base with Sentry hanging and refusing


FULL = Settings()
SMOKE = Settings(
    rounds=1,
    duration=1,
    warmup=0,
    latency_providers=10,
    memory_events=20_000,
    memory_providers=2_000,
    startup_runs=1,
    decode_seconds=0.05,
    smoke=True,
)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- wrk


async def wrk(url: str, duration: int, connections: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    """One wrk run (1 thread: the other core is the server's); returns done()'s figures plus req/s."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "2s", "-s", str(LUA), url]
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), duration + 30)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    for line in out.decode().splitlines():
        if line.startswith("BENCH_RESULT "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
            result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
            result["error_count"] = sum(result["errors"].values())
            return result
    raise RuntimeError(f"wrk printed no result: {out.decode()} {err.decode()}")


async def measured_wrk(
    proc: Proc, duration: int, connections: int, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """wrk against `proc`, with the server's CPU time per request and its RSS afterwards."""
    cpu = proc.cpu_seconds()
    result = await wrk(proc.url, duration, connections, env)
    result["cpu_us_per_request"] = (proc.cpu_seconds() - cpu) / max(1, result["requests"]) * 1e6
    result["rss_mib"] = proc.rss_mib()
    return result


async def scrape(proc: Proc, session: aiohttp.ClientSession) -> dict[str, float]:
    """alertd's counters summed over labels (sentry events by outcome), from /metrics."""
    async with session.get(f"http://127.0.0.1:{proc.ready_port}/metrics") as response:
        text = await response.text()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            key = sample.name
            if "outcome" in sample.labels:
                key = f"{sample.name}{{outcome={sample.labels['outcome']}}}"
            totals[key] = totals.get(key, 0.0) + sample.value
    return totals


# ------------------------------------------------------------------------------------------- stages


class Run:
    """One benchmark run: its settings, scratch folder, variants and results."""

    def __init__(self, settings: Settings, variants: dict[str, Path], scratch: Path) -> None:
        self.settings = settings
        self.variants = variants
        self.scratch = scratch
        self.results: dict[str, Any] = {}
        self.commands: dict[str, str] = {}

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[aiohttp.ClientSession]:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=8)) as session:
            yield session

    # -- startup -----------------------------------------------------------------------------------

    async def startup(self) -> None:
        """Spawn to /readyz 200, alternating alertd and the reference (bare aiohttp), fresh processes."""
        s = self.settings
        times: dict[str, list[float]] = {BASE: [], "reference": []}
        async with self.session() as session:
            for _ in range(s.startup_runs):
                for name in (BASE, "reference"):
                    if name == BASE:
                        proc = await start_alertd("startup-alertd", self.variants[BASE], self.scratch, {})
                    else:
                        proc = await start_reference("startup-reference", "asyncio", self.scratch)
                    try:
                        times[name].append(await wait_ready(proc, session))
                    finally:
                        await proc.stop()
        self.results["startup"] = {
            "runs_s": times,
            "alertd_median_s": median(times[BASE]),
            "reference_median_s": median(times["reference"]),
        }

    # -- micro ---------------------------------------------------------------------------------------

    async def micro(self) -> None:
        """bench/micro.py in a subprocess per variant, alternating over the rounds (max 3)."""
        figures: dict[str, list[dict[str, float]]] = {name: [] for name in self.variants}
        for _ in range(min(3, self.settings.rounds)):
            for name, source in self.variants.items():
                argv = [sys.executable, "-m", "bench.micro"] + (["--smoke"] if self.settings.smoke else [])
                env = {**os.environ, "PYTHONPATH": f"{source}{os.pathsep}{ROOT}"}
                process = await asyncio.create_subprocess_exec(
                    *argv, stdout=asyncio.subprocess.PIPE, env=env, cwd=self.scratch
                )
                out, _ = await asyncio.wait_for(process.communicate(), 300)
                if process.returncode != 0:
                    raise RuntimeError(f"bench.micro failed for {name}")
                figures[name].append(json.loads(out))
        self.results["micro"] = {
            name: {key: median([run[key] for run in runs]) for key in runs[0]} for name, runs in figures.items()
        }

    # -- ingest ----------------------------------------------------------------------------------------

    async def ingest(self) -> None:  # noqa: PLR0912 - one flat sequence of servers and summaries
        """Single-event ingest: references, every variant, and the base with Sentry hanging and refusing."""
        s = self.settings
        ingest_env = {"ALERTD_COOLDOWN_SECONDS": "1"}
        async with self.session() as session, loopback_sentry() as sentry, loopback_sentry() as hanging:
            hanging.behaviour.hang = True
            refused_port = free_port()
            refused_dsn = sentry.dsn.replace(f":{sentry.port}/", f":{refused_port}/")
            procs: dict[str, Proc] = {}
            try:
                for name, source in self.variants.items():
                    procs[name] = await start_alertd(
                        name, source, self.scratch, {**ingest_env, "SENTRY_DSN": sentry.dsn}, session
                    )
                source = self.variants[BASE]
                if s.isolation:
                    procs["sentry-hanging"] = await start_alertd(
                        "sentry-hanging", source, self.scratch, {**ingest_env, "SENTRY_DSN": hanging.dsn}, session
                    )
                    procs["sentry-refused"] = await start_alertd(
                        "sentry-refused", source, self.scratch, {**ingest_env, "SENTRY_DSN": refused_dsn}, session
                    )
                loops = {name: proc.event_loop() for name, proc in procs.items()}
                refs: dict[str, Proc] = {}
                for loop in sorted(set(loops.values())):
                    refs[loop] = await start_reference(f"reference-{loop}", loop, self.scratch, session)
                servers = {f"reference-{loop}": proc for loop, proc in refs.items()} | procs
                env = {"BENCH_PROVIDERS": str(s.providers)}
                if s.warmup:
                    for proc in servers.values():
                        await wrk(proc.url, s.warmup, s.connections, env)
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
                order = list(servers)
                for round_ in range(s.rounds):
                    for name in order if round_ % 2 == 0 else order[::-1]:
                        runs[name].append(await measured_wrk(servers[name], s.duration, s.connections, env))
                    log(
                        f"  ingest round {round_ + 1}/{s.rounds}: "
                        + ", ".join(f"{n} {runs[n][-1]['rps']:.0f}/s" for n in order)
                    )
                counters = {name: await scrape(proc, session) for name, proc in procs.items()}
            finally:
                await asyncio.gather(*(p.stop() for p in [*procs.values(), *refs.values()]))
        result: dict[str, Any] = {"loops": loops, "servers": {}}
        for name, server_runs in runs.items():
            result["servers"][name] = summarize(server_runs)
        for name in procs:
            ref = f"reference-{loops[name]}"
            summary = result["servers"][name]
            summary["reference"] = ref
            summary["ratio_to_reference"] = paired_ratio(runs[name], runs[ref], "rps")
            summary["cpu_ratio_to_reference"] = paired_ratio(runs[name], runs[ref], "cpu_us_per_request")
            summary["counters"] = counters[name]
        for name in ("sentry-hanging", "sentry-refused") if s.isolation else ():
            summary = result["servers"][name]
            summary["ratio_to_normal"] = paired_ratio(runs[name], runs[BASE], "rps")
            summary["rss_mib_by_round"] = [r["rss_mib"] for r in runs[name]]
        for name in self.variants:
            if name != BASE:
                result["servers"][name]["ratio_to_base"] = paired_ratio(runs[name], runs[BASE], "rps")
                result["servers"][name]["cpu_ratio_to_base"] = paired_ratio(
                    runs[name], runs[BASE], "cpu_us_per_request"
                )
        self.results["ingest"] = result

    # -- batch ---------------------------------------------------------------------------------------

    async def batch(self) -> None:
        """1000-event JSON arrays and NDJSON, against the in-process decode speed of the same body."""
        s = self.settings
        items = bodies.events(bodies.BATCH_EVENTS, providers=s.providers, keys=200)
        formats = {
            "json": (bodies.json_array(items), "application/json"),
            "ndjson": (bodies.ndjson(items), "application/x-ndjson"),
        }
        files = {}
        for fmt, (body, _) in formats.items():
            files[fmt] = self.scratch / f"batch.{fmt}"
            files[fmt].write_bytes(body)
        runs: dict[str, list[dict[str, Any]]] = {}
        limits: dict[str, list[dict[str, float]]] = {fmt: [] for fmt in formats}
        async with self.session() as session, loopback_sentry() as sentry:
            procs: dict[str, Proc] = {}
            try:
                for name, source in self.variants.items():
                    procs[name] = await start_alertd(
                        f"batch-{name}", source, self.scratch, {"SENTRY_DSN": sentry.dsn}, session
                    )
                keys = [(name, fmt) for fmt in formats for name in procs]
                runs = {f"{name}/{fmt}": [] for name, fmt in keys}
                for round_ in range(s.rounds):
                    for fmt, (body, content_type) in formats.items():
                        limits[fmt].append(decode_limit(body, content_type, s.decode_seconds))
                    for name, fmt in keys if round_ % 2 == 0 else keys[::-1]:
                        env = {"BENCH_BODY_FILE": str(files[fmt]), "BENCH_CONTENT_TYPE": formats[fmt][1]}
                        run = await measured_wrk(procs[name], s.duration, s.batch_connections, env)
                        run["events_per_s"] = run["rps"] * bodies.BATCH_EVENTS
                        runs[f"{name}/{fmt}"].append(run)
                    log(
                        f"  batch round {round_ + 1}/{s.rounds}: "
                        + ", ".join(f"{k} {v[-1]['events_per_s']:.0f} ev/s" for k, v in runs.items())
                    )
            finally:
                await asyncio.gather(*(p.stop() for p in procs.values()))
        result: dict[str, Any] = {"body_bytes": {fmt: len(b) for fmt, (b, _) in formats.items()}, "servers": {}}
        result["decode_limit_events_per_s"] = {
            fmt: {key: median([r[key] for r in rounds]) for key in rounds[0]} for fmt, rounds in limits.items()
        }
        for key, key_runs in runs.items():
            fmt = key.rpartition("/")[2]
            summary = summarize(key_runs)
            summary["events_per_s"] = median([r["events_per_s"] for r in key_runs])
            for decoder in limits[fmt][0]:
                summary[f"ratio_to_{decoder}_limit"] = median(
                    [r["events_per_s"] / lim[decoder] for r, lim in zip(key_runs, limits[fmt], strict=True)]
                )
            summary["cpu_ns_per_event"] = summary["cpu_us_per_request"] * 1000 / bodies.BATCH_EVENTS
            base = f"{BASE}/{fmt}"
            if key != base:
                summary["ratio_to_base"] = paired_ratio(key_runs, runs[base], "rps")
                summary["cpu_ratio_to_base"] = paired_ratio(key_runs, runs[base], "cpu_us_per_request")
            result["servers"][key] = summary
        self.results["batch"] = result

    # -- latency -------------------------------------------------------------------------------------

    async def latency(self) -> None:
        """Response to the threshold-crossing POST -> envelope at the loopback Sentry, one provider at a time."""
        s = self.settings
        async with self.session() as session, stamping_sentry() as sentry:
            arrivals = sentry.arrivals
            proc = await start_alertd("latency", self.variants[BASE], self.scratch, {"SENTRY_DSN": sentry.dsn}, session)
            latencies: list[float] = []
            try:
                for i in range(s.latency_providers):
                    provider = f"latency-{i:03d}"
                    below = [{"provider": provider, "status": 503, "api_key": f"sk-{i}"}] * 4
                    await post(session, proc.url, bodies.json_array(below))
                    await post(session, proc.url, json.dumps({"provider": provider, "status": 503}).encode())
                    answered = time.perf_counter()
                    async with asyncio.timeout(10):
                        while provider not in arrivals:
                            await sentry.next_arrival()
                    latencies.append((arrivals[provider] - answered) * 1000)
            finally:
                await proc.stop()
        ordered = sorted(latencies)
        self.results["latency"] = {
            "providers": len(latencies),
            "p50_ms": percentile(ordered, 50),
            "p99_ms": percentile(ordered, 99),
            "max_ms": ordered[-1],
            "min_ms": ordered[0],
        }

    # -- memory ----------------------------------------------------------------------------------------

    async def memory(self) -> None:
        """RSS: idle; after N events for one provider; after M distinct providers (default cap), one process."""
        s = self.settings
        result: dict[str, Any] = {}
        async with self.session() as session, loopback_sentry() as sentry:
            ref = await start_reference("memory-reference", "asyncio", self.scratch, session)
            proc = await start_alertd("memory", self.variants[BASE], self.scratch, {"SENTRY_DSN": sentry.dsn}, session)
            try:
                await asyncio.sleep(1.0)
                result["reference_idle_mib"] = ref.rss_mib()
                result["idle_mib"] = proc.rss_mib()
                # One provider; API keys from 10,000 distinct ones, more than the anonymizer's cache holds.
                per = bodies.BATCH_EVENTS
                batches = [
                    bodies.json_array(bodies.events(per, start=j * per, providers=1, keys=10_000, prefix="one"))
                    for j in range(10)
                ]
                started = time.perf_counter()
                await post_many(session, proc.url, [batches[j % 10] for j in range(s.memory_events // per)])
                result["one_provider_events"] = s.memory_events
                result["one_provider_events_per_s"] = s.memory_events / (time.perf_counter() - started)
                result["after_one_provider_mib"] = proc.rss_mib()
                spread = [
                    bodies.json_array(
                        bodies.events(per, start=j * per, providers=s.memory_providers, keys=10_000, prefix="many")
                    )
                    for j in range(s.memory_providers // per)
                ]
                await post_many(session, proc.url, spread)
                result["distinct_providers"] = s.memory_providers
                result["after_many_providers_mib"] = proc.rss_mib()
                result["counters"] = await scrape(proc, session)
            finally:
                await asyncio.gather(proc.stop(), ref.stop())
        result["one_provider_growth_mib"] = result["after_one_provider_mib"] - result["idle_mib"]
        self.results["memory"] = result

    # -- cluster ---------------------------------------------------------------------------------------

    async def cluster(self) -> None:
        """Cluster mode (one loopback redis-server, one of them hung) against memory mode: bench/cluster.py."""
        await cluster_stage(self)


# ------------------------------------------------------------------------------------------ helpers


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds of one server's wrk runs."""
    return {
        "rps": median([r["rps"] for r in runs]),
        "rps_by_round": [round(r["rps"]) for r in runs],
        "p50_ms": median([r["latency_us"]["p50"] / 1000 for r in runs]),
        "p99_ms": median([r["latency_us"]["p99"] / 1000 for r in runs]),
        "cpu_us_per_request": median([r["cpu_us_per_request"] for r in runs]),
        "errors": sum(r["error_count"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "rss_mib_last": runs[-1]["rss_mib"],
    }


def paired_ratio(runs: list[dict[str, Any]], against: list[dict[str, Any]], key: str) -> float:
    """Median over rounds of run/against, each pair from the same round."""
    return median([a[key] / b[key] for a, b in zip(runs, against, strict=True)])


def percentile(ordered: list[float], pct: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def decode_limit(body: bytes, content_type: str, seconds: float) -> dict[str, float]:
    """Events/s of decoding `body` alone in this process: json (the stdlib, alertd's stack) and msgspec."""
    decoders: dict[str, Callable[[bytes], Any]] = {"json": json.loads}
    with contextlib.suppress(ImportError):
        import msgspec  # noqa: PLC0415 - optional: only a second reference figure

        decoders["msgspec"] = msgspec.json.decode
    out = {}
    for name, decode in decoders.items():
        if content_type == "application/x-ndjson":

            def work(decode: Callable[[bytes], Any] = decode) -> None:
                for line in body.split(b"\n"):
                    if line:
                        decode(line)
        else:

            def work(decode: Callable[[bytes], Any] = decode) -> None:
                decode(body)

        count, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds or count < 3:
            work()
            count += 1
        out[name] = count * bodies.BATCH_EVENTS / elapsed
    return out


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> None:
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
        if response.status != 202:
            raise RuntimeError(f"POST answered {response.status}: {await response.text()}")


async def post_many(session: aiohttp.ClientSession, url: str, batch_bodies: list[bytes], concurrency: int = 4) -> None:
    queue = list(reversed(batch_bodies))

    async def worker() -> None:
        while queue:
            await post(session, url, queue.pop())

    await asyncio.gather(*(worker() for _ in range(concurrency)))


class StampingSentry(LoopbackSentry):
    """A LoopbackSentry that notes when each provider's first event arrived (perf_counter, body read)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: dict[str, float] = {}
        self._arrival = asyncio.Event()

    async def next_arrival(self) -> None:
        """Wait for the next envelope with events."""
        await self._arrival.wait()

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()  # aiohttp keeps the body, so the parent reads it again for free
        arrived = time.perf_counter()
        seen = len(self.events)
        response = await super().handle(request)
        for event in self.events[seen:]:
            self.arrivals.setdefault(str(event.get("tags", {}).get("provider")), arrived)
        self._arrival.set()
        self._arrival = asyncio.Event()
        return response


def stamping_sentry() -> contextlib.AbstractAsyncContextManager[StampingSentry]:
    """tests/support/sentry_server.py's loopback_sentry, with arrival stamps."""
    return serve_sentry(StampingSentry())


# -------------------------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )

    def git(*args: str) -> str:
        command = ["git", *args]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()  # noqa: S603

    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.split("\n")[0]  # noqa: S607
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "wrk": wrk_version.strip(),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "alertd_dirty": bool(git("status", "--porcelain", "--", "alertd")),
        "load_average": os.getloadavg(),
    }


TARGETS: list[tuple[str, str, Callable[[dict[str, Any]], float], str, Callable[[float], bool]]] = [
    (
        "single-event ingest / reference",
        "ingest",
        lambda r: r["ingest"]["servers"][BASE]["ratio_to_reference"],
        ">= 0.90",
        lambda v: v >= 0.90,
    ),
    (
        "batch JSON events/s",
        "batch",
        lambda r: r["batch"]["servers"][f"{BASE}/json"]["events_per_s"],
        ">= 300000",
        lambda v: v >= 300_000,
    ),
    (
        "batch NDJSON events/s",
        "batch",
        lambda r: r["batch"]["servers"][f"{BASE}/ndjson"]["events_per_s"],
        ">= 300000",
        lambda v: v >= 300_000,
    ),
    (
        "batch JSON / json decode limit",
        "batch",
        lambda r: r["batch"]["servers"][f"{BASE}/json"]["ratio_to_json_limit"],
        ">= 0.40",
        lambda v: v >= 0.40,
    ),
    (
        "batch NDJSON / json decode limit",
        "batch",
        lambda r: r["batch"]["servers"][f"{BASE}/ndjson"]["ratio_to_json_limit"],
        ">= 0.40",
        lambda v: v >= 0.40,
    ),
    ("alert latency p99 (ms)", "latency", lambda r: r["latency"]["p99_ms"], "<= 20", lambda v: v <= 20),
    (
        "ingest, Sentry hanging / normal",
        "ingest",
        lambda r: r["ingest"]["servers"]["sentry-hanging"]["ratio_to_normal"],
        ">= 0.90",
        lambda v: v >= 0.90,
    ),
    (
        "ingest, Sentry refusing / normal",
        "ingest",
        lambda r: r["ingest"]["servers"]["sentry-refused"]["ratio_to_normal"],
        ">= 0.90",
        lambda v: v >= 0.90,
    ),
    ("RSS idle (MiB)", "memory", lambda r: r["memory"]["idle_mib"], "<= 60", lambda v: v <= 60),
    (
        "RSS growth, 1M events one provider (MiB)",
        "memory",
        lambda r: r["memory"]["one_provider_growth_mib"],
        "<= 10",
        lambda v: v <= 10,
    ),
    (
        "RSS after 50k providers (MiB)",
        "memory",
        lambda r: r["memory"]["after_many_providers_mib"],
        "<= 150",
        lambda v: v <= 150,
    ),
    ("startup to ready (s)", "startup", lambda r: r["startup"]["alertd_median_s"], "<= 1.0", lambda v: v <= 1.0),
    (
        "cluster single-event / memory mode",
        "cluster",
        lambda r: r["cluster"]["servers"]["single/redis"]["ratio_to_memory"],
        ">= 0.80",
        lambda v: v >= 0.80,
    ),
    (
        "cluster batch JSON events/s",
        "cluster",
        lambda r: r["cluster"]["servers"]["batch/redis"]["events_per_s"],
        ">= 150000",
        lambda v: v >= 150_000,
    ),
    (
        "cluster, Redis hung / memory mode",
        "cluster",
        lambda r: r["cluster"]["servers"]["single/redis-hung"]["ratio_to_memory"],
        ">= 0.80",
        lambda v: v >= 0.80,
    ),
    (
        "cluster alert latency p99 (ms)",
        "cluster",
        lambda r: r["cluster"]["alert_latency"]["redis"]["p99_ms"],
        "<= 25",
        lambda v: v <= 25,
    ),
]


def verdicts(results: dict[str, Any], *, smoke: bool) -> list[dict[str, Any]]:
    rows = []
    for label, stage, get, target, ok in TARGETS:
        if stage not in results:
            continue
        try:
            value = get(results)
        except KeyError:  # a partial run (--stages, --no-isolation)
            continue
        rows.append({"target": label, "value": value, "wanted": target, "met": None if smoke else ok(value)})
    return rows


def table(results: dict[str, Any], rows: list[dict[str, Any]], *, smoke: bool) -> str:
    nan = float("nan")
    lines = []
    if "ingest" in results:
        lines.append("single-event ingest (wrk -t1 -c32, medians over rounds; ratios paired per round):")
        lines.append(
            f"  {'server':<34}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'CPU µs/req':>11}{'/ref':>7}{'/base':>7}"
            f"{'CPU/base':>9}{'errors':>7}"
        )
        for name, srv in results["ingest"]["servers"].items():
            ratio = srv.get("ratio_to_reference", 1.0 if name.startswith("reference") else nan)
            base = srv.get("ratio_to_base", srv.get("ratio_to_normal", nan))
            lines.append(
                f"  {name:<34}{srv['rps']:>8.0f}{srv['p50_ms']:>8.2f}{srv['p99_ms']:>8.2f}"
                f"{srv['cpu_us_per_request']:>11.1f}{ratio:>7.3f}{base:>7.3f}{srv.get('cpu_ratio_to_base', nan):>9.3f}"
                f"{srv['errors']:>7}"
            )
    if "batch" in results:
        limit = results["batch"]["decode_limit_events_per_s"]
        lines.append("batch ingest (1000 events per request, wrk -t1 -c4):")
        for fmt, decoders in limit.items():
            figures = ", ".join(f"{dec} {v:,.0f} ev/s" for dec, v in decoders.items())
            lines.append(f"  decode-only limit, {fmt} body: {figures}")
        lines.append(
            f"  {'server/format':<40}{'events/s':>10}{'/json lim':>10}{'p99 ms':>8}{'CPU ns/ev':>10}{'/base':>7}"
            f"{'CPU/base':>9}{'errors':>7}"
        )
        for name, srv in results["batch"]["servers"].items():
            lines.append(
                f"  {name:<40}{srv['events_per_s']:>10.0f}{srv['ratio_to_json_limit']:>10.3f}{srv['p99_ms']:>8.1f}"
                f"{srv['cpu_ns_per_event']:>10.0f}{srv.get('ratio_to_base', nan):>7.3f}"
                f"{srv.get('cpu_ratio_to_base', nan):>9.3f}{srv['errors']:>7}"
            )
    if "cluster" in results:
        c = results["cluster"]
        lines.append(
            f"cluster mode (Redis {c['redis_version']} on loopback; ratios to memory mode paired per round; "
            f"hung: first call {c['hung_first_call_s'] * 1000:.0f} ms, then {c['hung_mode']}, "
            f"{c['hung_backend_errors_total']:.0f} timeouts in {c['hung_seconds']:.0f} s):"
        )
        lines.append(
            f"  {'load/server':<28}{'req/s':>9}{'events/s':>10}{'p50 ms':>8}{'p99 ms':>8}{'CPU µs/req':>11}"
            f"{'/memory':>8}{'errors':>7}"
        )
        for name, srv in c["servers"].items():
            lines.append(
                f"  {name:<28}{srv['rps']:>9.0f}{srv.get('events_per_s', nan):>10.0f}{srv['p50_ms']:>8.2f}"
                f"{srv['p99_ms']:>8.2f}{srv['cpu_us_per_request']:>11.1f}{srv.get('ratio_to_memory', nan):>8.3f}"
                f"{srv['errors']:>7}"
            )
        for name, lat in c["alert_latency"].items():
            lines.append(f"  alert latency {name}: p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms")
        for name, ops in c["redis_ops"].items():
            lines.append(
                f"  Redis per request, {name}: {ops['evalsha_per_request']:.2f} EVALSHA, "
                f"{ops['commands_per_request']:.1f} commands in all"
            )
        mem = c["redis_memory_per_provider"]
        lines.append(f"  Redis memory per provider: median {mem['bytes_median']} B, max {mem['bytes_max']} B")
    if "micro" in results:
        lines.append("microbenchmarks (ns per unit, median):")
        names = list(results["micro"])
        lines.append(f"  {'':<46}" + "".join(f"{n[:10]:>11}" for n in names))
        lines.extend(
            f"  {key:<46}" + "".join(f"{results['micro'][n][key]:>11.0f}" for n in names)
            for key in results["micro"][names[0]]
        )
    lines.append("targets" + (" (SMOKE RUN: figures are not meaningful)" if smoke else "") + ":")
    for row in rows:
        met = "-" if row["met"] is None else ("met" if row["met"] else "MISSED")
        lines.append(f"  {row['target']:<44}{row['value']:>14,.3f}  {row['wanted']:<10}{met}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace, variants: dict[str, Path]) -> int:
    settings = SMOKE if args.smoke else FULL
    if args.rounds:
        settings = Settings(**{**asdict(settings), "rounds": args.rounds})
    if args.no_isolation:
        settings = Settings(**{**asdict(settings), "isolation": False})
    if args.duration:
        settings = Settings(**{**asdict(settings), "duration": args.duration})
    stages = args.stages.split(",") if args.stages else list(STAGES)
    if shutil.which("wrk") is None and {"ingest", "batch", "cluster"} & set(stages):
        raise SystemExit("wrk is not installed (make tools)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for old in sorted(RESULTS.glob("alertd-bench-*"), key=lambda p: p.stat().st_mtime)[:-4]:
        shutil.rmtree(old, ignore_errors=True)  # keep the server logs of the last few runs only
    scratch = Path(tempfile.mkdtemp(prefix="alertd-bench-", dir=RESULTS))
    bench = Run(settings, variants, scratch)
    started = time.time()
    for stage in stages:
        log(f"stage {stage} ...")
        stage_started = time.perf_counter()
        await getattr(bench, stage)()
        log(f"stage {stage} done in {time.perf_counter() - stage_started:.1f} s")
    rows = verdicts(bench.results, smoke=settings.smoke)
    report = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "elapsed_s": time.time() - started,
        "command": " ".join(["python -m bench.run", *sys.argv[1:]]),
        "settings": asdict(settings),
        "variants": {k: str(v) for k, v in variants.items()},
        "machine": machine(),
        "results": bench.results,
        "targets": rows,
    }
    out = Path(args.out) if args.out else RESULTS / ("smoke.json" if settings.smoke else "latest.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(bench.results, rows, smoke=settings.smoke))
    print(f"wrote {out} ({report['elapsed_s']:.0f} s); server logs in {scratch}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="seconds-long run of every stage (CI)")
    parser.add_argument("--stages", help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--base", type=Path, default=ROOT, help="folder holding the alertd under test (the repo)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=DIR", help="also measure DIR/alertd")
    parser.add_argument("--no-isolation", action="store_true", help="skip the Sentry hanging/refusing servers")
    parser.add_argument("--rounds", type=int, help="override the number of alternating rounds")
    parser.add_argument("--duration", type=int, help="override the seconds per wrk run")
    parser.add_argument("--out", help="result file (default bench/results/latest.json or smoke.json)")
    args = parser.parse_args()
    variants = {BASE: args.base.resolve()}
    for spec in args.variant:
        name, _, path = spec.partition("=")
        variants[name] = Path(path).resolve()
    sys.exit(asyncio.run(main_async(args, variants)))


if __name__ == "__main__":
    main()
