"""Hot reload of the rules file: on SIGHUP (`reload`) and when the file changes (`run` polls it).

Each poll stats the path following symlinks, so a Kubernetes ConfigMap swap (a new `..data` symlink renamed
over the old one) is seen, and hashes the bytes, so an edit that keeps the size and the mtime is seen too.
A bad file keeps the rules in force: one `rules_reload_failed` line names the file, the line and the reason,
and the same bad content is not reported again on every poll.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry, Counter, Gauge
from structlog.typing import FilteringBoundLogger

from alertd.errors import RulesError
from alertd.rules import ProviderRule, RuleSet
from alertd.rules_file import parse_rules_bytes, read_rules_file

RELOAD_RESULTS = ("success", "failure")
MAX_POLL_SECONDS = 5.0

# What a poll saw: (st_dev, st_ino, st_mtime_ns, st_size) and the SHA-256 of the bytes, or the read error.
_Seen = tuple[tuple[int, int, int, int], bytes] | str


class RulesMetrics:
    """The reload counters: every load of the rules file (the startup one included) by result."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reloads = Counter(
            "alertd_rules_reloads",
            "Loads of the rules file (ALERTD_RULES_FILE), the startup load included, by result.",
            ["result"],
            registry=registry,
        )
        self.last_success = Gauge(
            "alertd_rules_last_reload_success_timestamp_seconds",
            "Unix time of the last successful load of the rules file.",
            registry=registry,
        )
        for result in RELOAD_RESULTS:
            self.reloads.labels(result)


class RulesReloader:
    """Keeps the rules from PATH in force: loads them at startup, reloads on demand and when the file changes.

    `apply` receives each new RuleSet after a successful reload (not the startup one: `load_initial` returns it).
    """

    def __init__(
        self,
        path: str,
        env_defaults: ProviderRule,
        *,
        apply: Callable[[RuleSet], None],
        log: FilteringBoundLogger,
        registry: CollectorRegistry,
        poll_seconds: float = 2.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < poll_seconds <= MAX_POLL_SECONDS:
            raise ValueError(f"poll_seconds must be > 0 and <= {MAX_POLL_SECONDS}, not {poll_seconds}")
        self.path = path
        self.env_defaults = env_defaults
        self.poll_seconds = poll_seconds
        self.metrics = RulesMetrics(registry)
        self.current: RuleSet | None = None
        self._apply = apply
        self._log = log
        self._wall_clock = wall_clock
        self._seen: _Seen | None = None
        # Moves on every load attempt, so that a poll that raced a SIGHUP reload drops what it read.
        self._generation = 0

    def load_initial(self) -> RuleSet:
        """Load the rules at startup, counted as a reload; raises RulesError (the daemon exits 2 naming the file).

        Does not call `apply`: the caller builds the service with the RuleSet returned.
        """
        self._generation += 1
        try:
            seen, data = self._read()
            self._seen = seen
            rules = self._parse(data)
        except RulesError:
            self.metrics.reloads.labels("failure").inc()
            raise
        self._succeeded(rules)
        self._log.info("rules_loaded", source=rules.source, rules=len(rules.rules), silences=len(rules.silences))
        return rules

    def reload(self, reason: str) -> bool:
        """Re-read the file now, even if it looks unchanged (SIGHUP); True when the new rules are in force.

        On failure the old rules stay, one `rules_reload_failed` line says why, and a failure is counted.
        """
        self._generation += 1
        try:
            seen, data = self._read()
        except RulesError as exc:
            self._seen = exc.reason
            self._failed(exc, reason)
            return False
        return self._load(seen, data, reason)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Poll the file every poll_seconds and reload it when it changed; runs until cancelled."""
        task_status.started()
        while True:
            await anyio.sleep(self.poll_seconds)
            generation = self._generation
            try:
                seen, data = await anyio.to_thread.run_sync(self._read)
            except RulesError as exc:
                if generation == self._generation and exc.reason != self._seen:
                    self._generation += 1
                    self._seen = exc.reason
                    self._failed(exc, "changed")
                continue
            if generation == self._generation and seen != self._seen:
                self._generation += 1
                self._load(seen, data, "changed")

    def _read(self) -> tuple[_Seen, bytes]:
        """What the file looks like now, and its bytes; raises RulesError when it cannot be read."""
        try:
            st = os.stat(self.path)  # follows the symlink, as open() does
        except OSError as exc:
            raise RulesError(self.path, None, f"cannot read the rules file: {exc.strerror or exc}") from None
        data = read_rules_file(self.path)
        return ((st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size), hashlib.sha256(data).digest()), data

    def _parse(self, data: bytes) -> RuleSet:
        return parse_rules_bytes(data, self.path, self.env_defaults, self._wall_clock())

    def _load(self, seen: _Seen, data: bytes, reason: str) -> bool:
        self._seen = seen
        try:
            rules = self._parse(data)
        except RulesError as exc:
            self._failed(exc, reason)
            return False
        self._succeeded(rules)
        self._apply(rules)
        self._log.info(
            "rules_reloaded",
            source=rules.source,
            reason=reason,
            rules=len(rules.rules),
            silences=len(rules.silences),
        )
        return True

    def _succeeded(self, rules: RuleSet) -> None:
        self.current = rules
        self.metrics.reloads.labels("success").inc()
        self.metrics.last_success.set(rules.loaded_at)

    def _failed(self, exc: RulesError, reason: str) -> None:
        self.metrics.reloads.labels("failure").inc()
        fields: dict[str, Any] = {"file": exc.path, "line": exc.line, "reason": exc.reason}
        self._log.error("rules_reload_failed", error=str(exc), trigger=reason, **fields)
