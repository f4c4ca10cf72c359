"""`python -m bench.check FILE`: the smoke's only assertion, that every stage ran and wrote its figures.

It checks structure, never speed: a slow or noisy machine passes, a broken stage does not.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from bench.run import STAGES


def problems(report: dict[str, object]) -> list[str]:
    results = report.get("results")
    if not isinstance(results, dict):
        return ["no results"]
    found = [f"stage {stage} wrote nothing" for stage in STAGES if stage not in results]
    targets = report.get("targets")
    if not isinstance(targets, list) or not targets:
        found.append("no target rows")
    else:
        found.extend(
            f"target {row.get('target')} has no finite value: {row.get('value')!r}"
            for row in targets
            if not isinstance(row.get("value"), (int, float)) or not math.isfinite(row["value"])
        )
    servers = results.get("ingest", {}).get("servers", {}) if isinstance(results.get("ingest"), dict) else {}
    for name, server in servers.items():
        if server.get("requests", 0) <= 0:
            found.append(f"ingest {name} served no request")
    found.extend(cluster_problems(results.get("cluster")))
    return found


def cluster_problems(cluster: object) -> list[str]:
    """The cluster stage: every server served, Redis was counted and measured, the hung one resumed."""
    if not isinstance(cluster, dict):
        return []  # reported above as "stage cluster wrote nothing"
    found = [
        f"cluster {name} served no request"
        for name, server in cluster.get("servers", {}).items()
        if server.get("requests", 0) <= 0
    ]
    needed = ("single/redis", "single/redis-hung", "batch/redis", "unloaded/redis")
    found.extend(f"cluster {name} missing" for name in needed if name not in cluster.get("servers", {}))
    if cluster.get("hung_mode") != "redis-fallback":
        found.append(f"cluster: the hung Redis did not put alertd in fallback ({cluster.get('hung_mode')!r})")
    if not cluster.get("redis_resumed"):
        found.append("cluster: the hung redis-server was not resumed")
    for name, ops in cluster.get("redis_ops", {}).items():
        if not ops.get("evalsha_per_request", 0) > 0:
            found.append(f"cluster: no EVALSHA counted for {name}")
    if not cluster.get("redis_memory_per_provider", {}).get("bytes_median", 0) > 0:
        found.append("cluster: no Redis memory per provider")
    latency = cluster.get("alert_latency", {})
    found.extend(
        f"cluster: no alert latency for {name}"
        for name in ("memory", "redis")
        if not latency.get(name, {}).get("providers", 0) > 0
    )
    return found


def main() -> None:
    path = Path(sys.argv[1])
    found = problems(json.loads(path.read_text()))
    for problem in found:
        print(f"bench-smoke: {problem}", file=sys.stderr)
    if found:
        sys.exit(1)
    print(f"bench-smoke: every stage ran and wrote {path}")


if __name__ == "__main__":
    main()
