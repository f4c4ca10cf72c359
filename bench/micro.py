"""In-process microbenchmarks of alertd's pure core; `python -m bench.micro [--smoke]` prints one JSON object.

Run in a subprocess by bench/run.py, with the alertd under test first on PYTHONPATH. Each figure is the
fastest of REPEATS timed loops (noise only adds time; run.py takes the median over rounds), in
nanoseconds per unit (event, key, request).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from alertd.anonymizer import Anonymizer
from alertd.event import JSON, NDJSON, decode_events
from alertd.logs import make_logger
from alertd.metrics import Metrics
from alertd.service import AlertService
from alertd.sink import NullSink
from alertd.tracker import MemoryTracker
from alertd.window import ProviderWindow, Rule
from bench import bodies

REPEATS = 5


class Clock:
    """A monotonic clock that moves 100 µs per reading, so windows slide and cooldowns expire."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1e-4
        return self.now


def timed(loop: Callable[[], int], repeats: int) -> float:
    """Fastest ns per unit of `loop`, which returns how many units it did."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        units = loop()
        samples.append((time.perf_counter_ns() - start) / units)
    return min(samples)  # noise on a shared machine only ever adds time


def run(scale: float, repeats: int) -> dict[str, Any]:  # noqa: PLR0915 - one flat list of figures
    n = max(1, int(scale))
    rule = Rule(threshold=5, window=300.0, cooldown=1.0)
    out: dict[str, Any] = {}

    def window_loop() -> int:
        window = ProviderWindow(rule)
        t = 1000.0
        for _ in range(200 * n):
            t += 1e-4
            window.record(t)
        return 200 * n

    out["window_record_ns_per_event"] = timed(window_loop, repeats)

    anonymizer = Anonymizer("bench-salt")
    batch = decode_events(bodies.json_array(bodies.events(bodies.BATCH_EVENTS)), JSON, anonymizer.anonymize)

    def tracker_loop() -> int:
        tracker = MemoryTracker(rule, 10_000, Clock())
        for _ in range(n):
            tracker.record_now(batch)
        return n * len(batch)

    out["tracker_record_ns_per_event"] = timed(tracker_loop, repeats)

    def service() -> AlertService:
        tracker = MemoryTracker(rule, 10_000, Clock())
        metrics = Metrics(CollectorRegistry(), tracker.tracked)
        log = make_logger("info", "json", stream=io.StringIO())
        return AlertService(tracker, metrics, NullSink(), log, clock=Clock())

    def service_batch_loop() -> int:
        svc = service()

        async def go() -> None:
            for _ in range(n):
                await svc.ingest(batch)

        asyncio.run(go())
        return n * len(batch)

    out["service_ingest_ns_per_event_batch1000"] = timed(service_batch_loop, repeats)

    def service_single_loop() -> int:
        svc = service()

        async def go() -> None:
            for _ in range(n):
                for event in batch:
                    await svc.ingest([event])

        asyncio.run(go())
        return n * len(batch)

    out["service_ingest_ns_per_single_event_request"] = timed(service_single_loop, repeats)

    keys = [f"sk-live-{i:016d}" for i in range(200)]
    uncached = Anonymizer("bench-salt", cache_size=0)

    def anonymize_loop(anonymize: Callable[[str], str], key_list: list[str], passes: int) -> Callable[[], int]:
        def loop() -> int:
            for _ in range(passes):
                for key in key_list:
                    anonymize(key)
            return passes * len(key_list)

        return loop

    out["anonymize_ns_per_key_uncached"] = timed(anonymize_loop(uncached.anonymize, keys, 5 * n), repeats)
    cached = Anonymizer("bench-salt")
    out["anonymize_ns_per_key_cached_hit"] = timed(anonymize_loop(cached.anonymize, keys, 5 * n), repeats)
    # Twice as many distinct keys as the default cache holds, cycled: every look-up misses and evicts.
    churned = Anonymizer("bench-salt")
    distinct = [f"sk-live-{i:016d}" for i in range(8192)]
    out["anonymize_ns_per_key_cached_miss"] = timed(anonymize_loop(churned.anonymize, distinct, 1), repeats)

    items = bodies.events(bodies.BATCH_EVENTS)
    array, lines = bodies.json_array(items), bodies.ndjson(items)
    single = bodies.json_array(items[:1])[1:-1]
    for name, body, content_type in (("json_array", array, JSON), ("ndjson", lines, NDJSON)):

        def decode_loop(body: bytes = body, content_type: str = content_type) -> int:
            for _ in range(n):
                decode_events(body, content_type, anonymizer.anonymize)
            return n * bodies.BATCH_EVENTS

        out[f"decode_events_ns_per_event_{name}"] = timed(decode_loop, repeats)

    def json_loads_loop() -> int:
        for _ in range(n):
            json.loads(array)
        return n * bodies.BATCH_EVENTS

    out["json_loads_ns_per_event_json_array"] = timed(json_loads_loop, repeats)

    def single_loop() -> int:
        for _ in range(1000 * n):
            decode_events(single, JSON, anonymizer.anonymize)
        return 1000 * n

    out["decode_events_ns_per_single_event_body"] = timed(single_loop, repeats)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a few milliseconds per figure; not meaningful")
    args = parser.parse_args()
    scale, repeats = (1.0, 1) if args.smoke else (10.0, REPEATS)
    print(json.dumps(run(scale, repeats)))


if __name__ == "__main__":
    main()
