"""Profile alertd under load with py-spy: `python -m bench.profile [--mode single|json|ndjson] [--seconds N]`.

Starts alertd (the working tree, or --source DIR), loads it with wrk on 127.0.0.1 (bounded by --seconds),
samples it with `py-spy record --format raw` meanwhile, and prints the functions with the most samples,
by own time and by inclusive time. The collapsed stacks stay in bench/results/profile-MODE.txt (feed
them to any flamegraph tool). py-spy comes from PyPI (`make bench-profile` installs it in .venv).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import sys
import tempfile
from pathlib import Path

from bench import bodies
from bench.cluster import redis_servers
from bench.procs import ROOT, start_alertd
from bench.run import RESULTS, Run, Settings, wrk
from tests.support.sentry_server import loopback_sentry


def pyspy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy (make bench-profile does)")
    return found


def summarize(collapsed: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [shorten(f) for f in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples"]
    for title, counter in (("own time", own), ("inclusive time", inclusive)):
        lines.append(f"top {top} by {title}:")
        lines.extend(f"  {100 * n / total:5.1f}%  {frame}" for frame, n in counter.most_common(top))
    return "\n".join(lines)


def shorten(frame: str) -> str:
    """`func (/long/path/site-packages/pkg/mod.py:12)` -> `func (pkg/mod.py:12)`."""
    name, _, where = frame.partition(" (")
    for marker in ("site-packages/", "lib/python3.11/", f"{ROOT}/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    if "/alertd/" in where:  # a variant's copy of the package
        where = "alertd/" + where.rsplit("/alertd/", 1)[1]
    return f"{name} ({where}"


async def profile(mode: str, seconds: int, source: Path, top: int, *, redis: bool = False) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="alertd-profile-", dir=RESULTS))
    bench = Run(Settings(), {"alertd": source}, scratch)
    env: dict[str, str] = {"BENCH_PROVIDERS": "50"}
    connections = 32
    if mode != "single":
        items = bodies.events(bodies.BATCH_EVENTS)
        body = bodies.json_array(items) if mode == "json" else bodies.ndjson(items)
        body_file = scratch / f"batch.{mode}"
        body_file.write_bytes(body)
        content_type = "application/json" if mode == "json" else "application/x-ndjson"
        env = {"BENCH_BODY_FILE": str(body_file), "BENCH_CONTENT_TYPE": content_type}
        connections = 4
    out = RESULTS / (f"profile-{mode}-redis.txt" if redis else f"profile-{mode}.txt")
    async with (
        bench.session() as session,
        loopback_sentry() as sentry,
        redis_servers(scratch, *(["redis"] if redis else [])) as servers,
    ):
        settings = {"SENTRY_DSN": sentry.dsn, "ALERTD_COOLDOWN_SECONDS": "1"}
        if redis:  # cluster mode with a loopback redis-server of the run's own
            settings["ALERTD_REDIS_URL"] = servers["redis"].url
        proc = await start_alertd("profile", source, scratch, settings, session)
        try:
            await wrk(proc.url, 1, connections, env)  # warm-up
            argv = [pyspy(), "record", "--pid", str(proc.pid), "--duration", str(seconds - 1), "--rate", "250"]
            argv += ["--format", "raw", "--function", "--threads", "--output", str(out)]
            spy = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
            )
            result = await wrk(proc.url, seconds, connections, env)
            _, err = await asyncio.wait_for(spy.communicate(), 30)
            if spy.returncode != 0:
                raise SystemExit(f"py-spy failed: {err.decode()}")
        finally:
            await proc.stop()
    print(f"mode {mode}: {result['rps']:.0f} req/s under py-spy (sampling slows it; compare shapes, not speed)")
    print(summarize(out, top))
    print(f"collapsed stacks: {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("single", "json", "ndjson"), default="single")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--source", type=Path, default=ROOT, help="folder holding the alertd package to profile")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--redis", action="store_true", help="cluster mode, with a loopback redis-server")
    args = parser.parse_args()
    asyncio.run(profile(args.mode, args.seconds, args.source.resolve(), args.top, redis=args.redis))


if __name__ == "__main__":
    main()
