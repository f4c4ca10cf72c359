"""The `alertd` command: serve, check-config, send-test, silence."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence

import anyio
from prometheus_client import disable_created_metrics

from alertd import __version__
from alertd.alert import build_alert
from alertd.background import load_rules_file
from alertd.config import Config
from alertd.daemon import run
from alertd.errors import ConfigError, ListenError, RulesError
from alertd.event import FailureEvent
from alertd.logs import make_logger
from alertd.sentry import SentrySink
from alertd.silence_cli import add_silence_commands, run_silence
from alertd.tracker import Trigger
from alertd.window import Rule

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alertd", description="Upstream-failure alerting sidecar.")
    parser.add_argument("--version", action="version", version=f"alertd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the daemon until SIGTERM/SIGINT")
    commands.add_parser("check-config", help="validate the environment and print the effective config")
    send = commands.add_parser("send-test", help="send one labelled test alert to Sentry and wait for it")
    send.add_argument("--provider", default="alertd-send-test", help="provider name on the test alert")
    send.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for delivery")
    add_silence_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "silence":
        return run_silence(args, os.environ if environ is None else environ)
    try:
        config = Config.from_environ(os.environ if environ is None else environ)
    except ConfigError as exc:
        print(f"alertd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        try:
            rules = load_rules_file(config)
        except RulesError as exc:
            print(f"alertd: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        shown = {"config": config.redacted(), "warnings": list(config.warnings)}
        if rules is not None:
            shown["rules"] = rules.to_json()
        print(json.dumps(shown, indent=2))
        return EXIT_OK
    if args.command == "send-test":
        return _send_test(config, args.provider, args.timeout)
    return _serve(config)


def _serve(config: Config) -> int:
    # The *_created series would double the per-provider series for no use in alerting.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    log = make_logger(config.log_level, config.log_format, secrets=config.secrets)
    for warning in config.warnings:
        log.warning("config_warning", detail=warning)
    failed: list[BaseException] = []
    bad_rules: list[BaseException] = []
    try:
        anyio.run(run, config, log)
    except* ListenError as group:
        failed.extend(group.exceptions)
    except* RulesError as group:
        bad_rules.extend(group.exceptions)
    if bad_rules:
        log.error("rules_invalid", detail=str(bad_rules[0]))
        print(f"alertd: {bad_rules[0]}", file=sys.stderr)
        return EXIT_CONFIG
    if failed:
        log.error("listen_failed", detail=str(failed[0]))
        print(f"alertd: {failed[0]}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _send_test(config: Config, provider: str, timeout: float) -> int:
    if config.sentry_dsn is None:
        print("alertd: SENTRY_DSN is not set: nothing to send to", file=sys.stderr)
        return EXIT_CONFIG
    dsn = config.sentry_dsn
    event = FailureEvent(provider=provider, route="/alertd/send-test", error_type="alertd_test", status=599)
    now = time.time()
    trigger = Trigger(
        provider=provider,
        event=event,
        at=now,
        count=config.threshold,
        first_at=now,
        throttled_since_last=0,
        recent=((now, event),),
        rule=Rule(config.threshold, config.window_seconds, config.cooldown_seconds),
    )
    alert = build_alert(trigger, epoch_offset=0.0, test=True)

    async def deliver() -> str | None:
        sink = SentrySink(
            dsn,
            environment=config.sentry_environment,
            release=config.sentry_release,
            sample_rate=config.sentry_sample_rate,
            on_outcome=lambda _id, _outcome: None,
        )
        sink.watch(alert.event_id)
        sink.send(alert)
        await sink.aclose(timeout)
        return sink.outcome(alert.event_id)

    outcome = anyio.run(deliver) or "not_delivered_before_timeout"
    print(json.dumps({"event_id": alert.event_id, "outcome": outcome, "dsn": dsn.redacted()}))
    return EXIT_OK if outcome == "sent" else EXIT_FAILED
