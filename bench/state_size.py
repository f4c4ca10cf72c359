"""Snapshot size and time for 10,000 providers (each: 6 failures with full events, an alert, an open episode).

    .venv/bin/python -m bench.state_size [DIR]    # DIR: where to write the file (default: a temporary directory)

The figures in docs/RELIABILITY.md ("State across restarts") come from this; each is the fastest of 5 runs.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from alertd.event import FailureEvent
from alertd.silences import SilenceStore
from alertd.snapshot import capture, decode, document, encode, restore
from alertd.state import write_atomic
from alertd.tracker import MemoryTracker
from alertd.window import Rule

PROVIDERS = 10_000


def best(run: Callable[[], Any], rounds: int = 5) -> tuple[float, Any]:
    """The fastest of `rounds` timed runs, and the last result."""
    times = []
    result = None
    for _ in range(rounds):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    """Print the file's size and the time of each step of a snapshot and of a restore."""
    clock = time.monotonic
    tracker = MemoryTracker(Rule(), PROVIDERS, clock)
    for i in range(PROVIDERS):
        event = FailureEvent(
            f"provider-{i:05d}",
            route="/v1/chat/completions",
            request_id=f"req-{i}-0123456789",
            api_key="sk-proj-\u2026ea6a1ac544b2",
            error_type="timeout",
            status=503,
            message="upstream timed out after 30s",
            timestamp=1.8e9,
        )
        tracker.record_now([event] * 6)
    wall = time.time()
    offset = wall - clock()
    t_capture, captured = best(lambda: capture(tracker))
    t_document, doc = best(lambda: document(captured, [], offset=offset, saved_at=wall))
    t_encode, data = best(lambda: encode(doc))
    directory = tempfile.mkdtemp(dir=sys.argv[1] if len(sys.argv) > 1 else None)
    path = os.path.join(directory, "state.json")
    t_write, _ = best(lambda: write_atomic(path, data))
    t_decode, parsed = best(lambda: decode(data))

    def rebuild() -> Any:
        fresh = MemoryTracker(Rule(), PROVIDERS, clock)
        return restore(parsed, fresh, SilenceStore(), offset=time.time() - clock(), now=clock())

    t_restore, restored = best(rebuild)
    size = len(data)
    print(f"providers {len(doc['providers'])}, {size:,} bytes ({size / 1e6:.1f} MB, {size / PROVIDERS:.0f} B/provider)")
    print(
        f"on the loop: capture {t_capture * 1e3:.0f} ms; in the thread: document {t_document * 1e3:.0f} ms, "
        f"encode {t_encode * 1e3:.0f} ms, atomic write {t_write * 1e3:.0f} ms"
    )
    print(f"at start: decode {t_decode * 1e3:.0f} ms, validate and restore {t_restore * 1e3:.0f} ms")
    assert restored.providers == PROVIDERS


if __name__ == "__main__":
    main()
