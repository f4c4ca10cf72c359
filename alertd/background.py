"""The daemon's background tasks: cleanup, episode resolution, rules reloads, Sentry resolutions, Redis, state.

`run_background` starts each one in one task group, which `daemon.serve` owns; none holds a socket
the drain must close, so cancelling the group stops them all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry
from structlog.typing import FilteringBoundLogger

from alertd.config import Config
from alertd.resolver import IssueResolver
from alertd.rules import RuleSet, rules_from_environment
from alertd.rules_file import load_rules
from alertd.rules_watch import RulesReloader
from alertd.service import AlertService
from alertd.state import StateKeeper


def rules_reloader(
    config: Config,
    service: AlertService,
    log: FilteringBoundLogger,
    registry: CollectorRegistry,
    wall_clock: Callable[[], float] = time.time,
) -> RulesReloader | None:
    """Load ALERTD_RULES_FILE into `service` and return what reloads it; None when it is unset.

    Raises RulesError when the file is bad at startup: alertd then exits 2 naming the file and line.
    """
    if config.rules_file is None:
        return None
    reloader = RulesReloader(
        config.rules_file,
        environment_rules(config, wall_clock).defaults,
        apply=service.apply_rules,
        log=log,
        registry=registry,
        wall_clock=wall_clock,
    )
    service.apply_rules(reloader.load_initial())
    service.reload_rules = reloader.reload
    return reloader


def environment_rules(config: Config, wall_clock: Callable[[], float] = time.time) -> RuleSet:
    """ALERTD_THRESHOLD/WINDOW/COOLDOWN/RESOLVE_AFTER_SECONDS as the one rule (and a rules file's fallbacks)."""
    return rules_from_environment(
        config.threshold, config.window_seconds, config.cooldown_seconds, config.resolve_after_seconds, wall_clock()
    )


def load_rules_file(config: Config, wall_clock: Callable[[], float] = time.time) -> RuleSet | None:
    """The rules of ALERTD_RULES_FILE, or None when it is unset; raises RulesError (`check-config` uses it)."""
    if config.rules_file is None:
        return None
    return load_rules(config.rules_file, environment_rules(config, wall_clock).defaults, wall_clock())


async def run_background(
    config: Config,
    service: AlertService,
    reloader: RulesReloader | None,
    clock: Callable[[], float],
    *,
    state: StateKeeper | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Start every background task; ready once each has started; runs until cancelled."""
    log = service.log
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_cleanup_loop, service, config.cleanup_interval_seconds)
        tasks.start_soon(_resolve_loop, service, clock)
        if state is not None:
            tasks.start_soon(_snapshot_loop, service, state, config.state_snapshot_seconds)
        if reloader is not None:
            await tasks.start(reloader.run)
        if config.sentry_api is not None:
            resolver = IssueResolver(
                config.sentry_api,
                on_outcome=service.metrics.count_sentry_api_request,
                log=log,
                max_pending=config.max_providers,
            )
            service.resolutions = resolver
            await tasks.start(resolver.run)
        else:
            log.info(
                "sentry_resolution_off",
                detail="SENTRY_AUTH_TOKEN and SENTRY_ORG are unset: Sentry issues will not be resolved "
                "automatically when an episode ends",
            )
        if config.redis_url is not None:
            from alertd.redis_tracker import FailoverTracker  # noqa: PLC0415 - redis-py only in cluster mode

            if isinstance(service.tracker, FailoverTracker):
                # Connects once (bounded by ALERTD_REDIS_TIMEOUT_SECONDS), then reconnects after each outage.
                await tasks.start(service.tracker.run)
        task_status.started()


async def _cleanup_loop(service: AlertService, interval: float) -> None:
    while True:
        await anyio.sleep(interval)
        try:
            await service.cleanup()
        except Exception as exc:
            service.log.exception("cleanup_failed")
            service.sink.report_exception(exc)


async def _snapshot_loop(service: AlertService, state: StateKeeper, interval: float) -> None:
    # Writes ALERTD_STATE_FILE every interval when something changed since the last write; the final write
    # at shutdown is the drain's (daemon._drain).
    while True:
        await anyio.sleep(interval)
        try:
            await state.save("periodic")
        except Exception as exc:
            service.log.exception("state_save_failed", path=state.path)
            service.sink.report_exception(exc)


async def _resolve_loop(service: AlertService, clock: Callable[[], float]) -> None:
    # Sleeps until the next known deadline, or until one may have moved; never polls an idle process.
    while True:
        changed = service.deadlines_changed()
        try:
            next_deadline = await service.resolve_due()
        except Exception as exc:
            service.log.exception("resolve_failed")
            service.sink.report_exception(exc)
            next_deadline = clock() + 1.0
        delay = math.inf if next_deadline is None else max(0.0, next_deadline - clock())
        with anyio.move_on_after(delay):
            await changed.wait()
