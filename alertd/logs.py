"""Structured logging: one JSON object per line, built without global structlog configuration."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger


class SecretRedactor:
    """A processor that replaces every known secret in string values with `<redacted>`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = tuple(s for s in secrets if s)

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, "<redacted>")
            return value
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._clean(v) for v in value]
        return value

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        """Return `event_dict` with secrets replaced."""
        if not self._secrets:
            return event_dict
        return {k: self._clean(v) for k, v in event_dict.items()}


def make_logger(
    level: str = "info",
    fmt: str = "json",
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
) -> structlog.typing.FilteringBoundLogger:
    """A logger writing to `stream` (stdout by default) at `level` and above, in `fmt`."""
    renderer: Processor = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    processors: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        SecretRedactor(secrets),
        renderer,
    ]
    logger: structlog.typing.FilteringBoundLogger = structlog.wrap_logger(
        structlog.PrintLogger(stream if stream is not None else sys.stdout),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        cache_logger_on_first_use=False,
    )
    return logger.bind(logger="alertd")
