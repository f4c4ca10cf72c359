"""The daemon's lifecycle: wires config to the service and the network, and shuts down in order.

One anyio task group owns every task. Readiness comes from `task_status.started()`; shutdown is the
cancellation of that group, after which a shielded, time-bounded drain stops the ingest listener
(in-flight requests finish), delivers queued Sentry events, and closes the metrics listener last.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
from aiohttp import web
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry
from structlog.typing import FilteringBoundLogger

from alertd import __version__
from alertd.anonymizer import Anonymizer
from alertd.api import Health, make_app, make_metrics_app
from alertd.background import environment_rules, rules_reloader, run_background
from alertd.config import Address, Config, ListenAddress, UnixAddress
from alertd.listeners import LimitedSite, bind, bound, bound_listen
from alertd.metrics import Metrics
from alertd.sentry import SentrySink
from alertd.service import AlertService
from alertd.silences import MemorySilences, SilenceBackend
from alertd.sink import AlertSink, NullSink
from alertd.state import StateKeeper
from alertd.tracker import MemoryTracker, Tracker

SinkFactory = Callable[[AlertService], AlertSink]


@dataclass(frozen=True, slots=True)
class Listening:
    """What `serve` hands to `task_status.started()`.

    The addresses are those actually bound (port 0 becomes a real port).
    """

    api: ListenAddress
    metrics: Address
    service: AlertService


def build_service(
    config: Config,
    log: FilteringBoundLogger,
    registry: CollectorRegistry,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> AlertService:
    """The service with its tracker (in memory, or shared in Redis when ALERTD_REDIS_URL is set), no sink yet.

    Every provider is judged by the environment's rule until `apply_rules` puts a rules file in force.
    """
    rules = environment_rules(config, wall_clock)
    rule = rules.defaults.to_rule()
    local = MemoryTracker(rule, config.max_providers, clock, rule_for=rules.core_rule_for)
    metrics = Metrics(registry, local.tracked)
    tracker: Tracker = local
    shared_silences: SilenceBackend | None = None
    if config.redis_url is not None:
        # Imported only in cluster mode: redis-py costs ~10 MiB of RSS (docs/BENCHMARKS.md).
        from alertd.redis_silences import RedisSilences  # noqa: PLC0415
        from alertd.redis_tracker import build_failover_tracker  # noqa: PLC0415

        failover = build_failover_tracker(config, rule, local, registry, log, clock=clock, wall_clock=wall_clock)
        tracker = failover
        # API silences in Redis, for every pod: the tracker's client (one pool), prefix and timeout.
        shared_silences = RedisSilences(
            failover.shared.client,
            prefix=config.redis_prefix,
            timeout=config.redis_timeout_seconds,
            wall_clock=wall_clock,
            backend_up=lambda: failover.up,
            log=log,
        )
    service = AlertService(tracker, metrics, NullSink(), log, clock=clock, wall_clock=wall_clock)
    if shared_silences is not None:
        service.silences = shared_silences
    service.rules = rules
    return service


def default_sink(config: Config) -> SinkFactory:
    """Sentry when SENTRY_DSN is set, otherwise alerts go only to the log."""

    def make(service: AlertService) -> AlertSink:
        if config.sentry_dsn is None:
            return NullSink()
        return SentrySink(
            config.sentry_dsn,
            environment=config.sentry_environment,
            release=config.sentry_release,
            sample_rate=config.sentry_sample_rate,
            on_outcome=service.record_outcome,
        )

    return make


async def serve(
    config: Config,
    log: FilteringBoundLogger,
    *,
    registry: CollectorRegistry | None = None,
    make_sink: SinkFactory | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    task_status: TaskStatus[Listening] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run until cancelled; then drain within ALERTD_SHUTDOWN_TIMEOUT_SECONDS."""
    registry = registry or CollectorRegistry()
    service = build_service(config, log, registry, clock, wall_clock)
    reloader = rules_reloader(config, service, log, registry, wall_clock)
    service.sink = (make_sink or default_sink(config))(service)
    state = state_keeper(config, service, log, clock, wall_clock)
    if state is not None:
        # Before the listeners open: the first failure is weighed against the restored windows.
        await state.restore()
    health = Health()
    anonymizer = Anonymizer(config.api_key_salt)
    timeout = config.shutdown_timeout_seconds
    # keepalive_timeout bounds, from the connection's start or its previous answer, the wait for a complete
    # request head: a slow-header (slowloris) client or an idle one is closed after ALERTD_CLIENT_TIMEOUT_SECONDS.
    client: dict[str, Any] = {"keepalive_timeout": config.client_timeout_seconds}
    api_app = make_app(service, config, anonymizer)
    api_app.on_response_prepare.append(_close_while_draining(health))
    api_runner = web.AppRunner(
        api_app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=timeout,
        **client,
    )
    metrics_runner = web.AppRunner(
        make_metrics_app(service, health), handle_signals=False, access_log=None, shutdown_timeout=timeout, **client
    )
    await api_runner.setup()
    await metrics_runner.setup()
    owned_socket: str | None = None
    try:
        api_sock = bind("ALERTD_LISTEN", config.listen, config.socket_mode)
        if isinstance(config.listen, UnixAddress):
            owned_socket = config.listen.path
        metrics_sock = bind("ALERTD_METRICS_LISTEN", config.metrics_listen)
        listening = Listening(bound_listen(api_sock, config.listen), bound(metrics_sock), service)

        def refused() -> None:
            service.metrics.rejected.labels("too_many_connections").inc()

        await LimitedSite(api_runner, api_sock, limit=config.max_connections, on_refused=refused).start()
        await LimitedSite(metrics_runner, metrics_sock, limit=config.max_connections, on_refused=refused).start()
        health.ready = True
        log.info(
            "alertd_started",
            version=__version__,
            listen=str(listening.api),
            metrics_listen=str(listening.metrics),
            threshold=config.threshold,
            window_seconds=config.window_seconds,
            cooldown_seconds=config.cooldown_seconds,
            resolve_after_seconds=config.resolve_after_seconds,
            sentry="on" if config.sentry_dsn else "off",
            sentry_resolve="on" if config.sentry_api else "off",
        )
        async with anyio.create_task_group() as tasks:
            await tasks.start(partial(run_background, state=state), config, service, reloader, clock)
            task_status.started(listening)
            await anyio.sleep_forever()
    finally:
        with anyio.move_on_after(timeout + 1.0, shield=True):
            await _drain(
                service, health, api_runner, metrics_runner, grace=timeout, owned_socket=owned_socket, state=state
            )


# How long open keep-alive connections may still bring a request once draining starts.
DRAIN_IDLE_GRACE = 0.5


def _close_while_draining(health: Health) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    async def hook(request: web.Request, response: web.StreamResponse) -> None:
        if health.draining:
            # Headers are already prepared when this hook runs: say it, as well as do it.
            response.force_close()
            response.headers["Connection"] = "close"

    return hook


async def _drain(
    service: AlertService,
    health: Health,
    api_runner: web.AppRunner,
    metrics_runner: web.AppRunner,
    *,
    grace: float,
    owned_socket: str | None,
    state: StateKeeper | None = None,
) -> None:
    deadline = anyio.current_time() + grace
    health.draining = True  # /readyz turns 503, and every API answer now carries Connection: close
    for site in list(api_runner.sites):
        await site.stop()  # the listener closes: new connections are refused, cleanly
    server = api_runner.server
    if server is not None and server.connections:
        # Found by tests/reliability/test_shutdown.py: closing keep-alive connections at once resets the
        # requests clients are sending on them. Give them a moment to send their last one (answered with
        # Connection: close) before the idle rest is closed.
        await anyio.sleep(min(DRAIN_IDLE_GRACE, grace / 2))
    service.log.info("alertd_draining", shutdown_timeout_seconds=grace)
    await api_runner.cleanup()
    if owned_socket is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(owned_socket)
    if state is not None:
        # Ingest is closed: nothing changes any more. Written before the Sentry flush, which may use the rest.
        await _save_state(state, service, max(0.0, deadline - anyio.current_time()))
    await service.sink.aclose(max(0.0, deadline - anyio.current_time()))
    await metrics_runner.cleanup()
    unsent = service.deliveries.pending()
    if unsent:
        service.log.warning("sentry_events_unsent_at_shutdown", count=unsent)
    service.log.info("alertd_stopped", accepted_total=service.accepted_total)


def state_keeper(
    config: Config,
    service: AlertService,
    log: FilteringBoundLogger,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> StateKeeper | None:
    """What keeps ALERTD_STATE_FILE, in per-pod mode; None when it is unset or in cluster mode (state in Redis)."""
    if config.state_file is None:
        return None
    if config.redis_url is not None or not isinstance(service.tracker, MemoryTracker):
        log.warning(
            "state_file_ignored",
            path=config.state_file,
            detail="cluster mode (ALERTD_REDIS_URL) keeps the state in Redis; ALERTD_STATE_FILE is not used",
        )
        return None
    silences = service.silences.store if isinstance(service.silences, MemorySilences) else None
    return StateKeeper(
        config.state_file,
        service.tracker,
        silences,
        log,
        metrics=service.metrics,
        clock=clock,
        wall_clock=wall_clock,
    )


async def _save_state(state: StateKeeper, service: AlertService, budget: float) -> None:
    """The final write of ALERTD_STATE_FILE, within `budget` seconds; a failure is logged, never raised."""
    try:
        with anyio.fail_after(budget):
            await state.save("shutdown", force=True)
    except TimeoutError:
        service.log.error(  # noqa: TRY400 - the timeout is the reason; its traceback says nothing
            "state_save_timed_out", path=state.path, budget_seconds=round(budget, 3)
        )
    except Exception as exc:
        service.log.exception("state_save_failed", path=state.path)
        service.sink.report_exception(exc)


async def run(config: Config, log: FilteringBoundLogger) -> None:
    """Serve until SIGTERM or SIGINT, then drain and return."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with anyio.create_task_group() as tasks:
            listening: Listening = await tasks.start(serve, config, log)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    reload_rules = listening.service.reload_rules
                    if reload_rules is None:
                        log.info("sighup_ignored", detail="ALERTD_RULES_FILE is unset: no rules to reload")
                    else:
                        # The file is small; reading it blocks the loop for well under a millisecond.
                        reload_rules("SIGHUP")
                    continue
                log.info("shutdown_requested", signal=signal.Signals(signum).name)
                tasks.cancel_scope.cancel()
                break
