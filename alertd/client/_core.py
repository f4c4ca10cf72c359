# ruff: noqa: BLE001 - no exception may reach the router: each is counted in stats() instead
"""What both reporters share: the target, local validation, the bounded buffer, the counters, batching.

Nothing here does I/O. The buffer is guarded by one lock that is held for a few attribute updates only,
never across a network call, so `report()` from the router's threads never waits for the sender.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from alertd import __version__
from alertd.errors import InvalidEventError
from alertd.event import MAX_CHARS, MAX_MESSAGE_CHARS, MAX_PROVIDER_CHARS, NDJSON, parse_event

log = logging.getLogger("alertd.client")

FAILURES_PATH: Final = "/v1/failures"
USER_AGENT: Final = f"alertd-client/{__version__}"

# One buffered failure: provider, route, request_id, api_key, error_type, status, message, timestamp.
Item = tuple[str, str | None, str | None, str | None, str | None, int | None, str | None, float]
# A batch in flight: each item with its NDJSON line, so a retry does not encode it again.
Batch = list[tuple[Item, bytes]]

_ROUTE_MAX: Final = MAX_CHARS["route"]
_REQUEST_ID_MAX: Final = MAX_CHARS["request_id"]
_API_KEY_MAX: Final = MAX_CHARS["api_key"]
_ERROR_TYPE_MAX: Final = MAX_CHARS["error_type"]


@dataclass(frozen=True, slots=True)
class Target:
    """Where alertd listens: `http://host:port` (or https) or `unix:/path/to.sock`."""

    url: str  # the URL of POST /v1/failures; for a Unix socket its host part is a placeholder
    host: str
    port: int
    path: str  # the request path
    unix_path: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, text: str) -> Target:
        """Parse the address; raises ValueError."""
        if text.startswith("unix:"):
            sock = text.removeprefix("unix:")
            if not sock.startswith("/") or "\0" in sock:
                raise ValueError(f"expected unix:/absolute/path.sock, got {text!r}")
            return cls("http://alertd" + FAILURES_PATH, "alertd", 80, FAILURES_PATH, unix_path=sock)
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected http://host:port or unix:/path.sock, got {text!r}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)  # .port raises ValueError on a bad port
        # `http://host:port`, with or without the endpoint's own path (`.../v1/failures`), or under a prefix
        path = parts.path.rstrip("/").removesuffix(FAILURES_PATH) + FAILURES_PATH
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return cls(f"{parts.scheme}://{host}:{port}{path}", parts.hostname, port, path, tls=tls)


def headers(token: str | None) -> dict[str, str]:
    """The request headers of every batch."""
    found = {"Content-Type": NDJSON, "User-Agent": USER_AGENT}
    if token:
        found["Authorization"] = f"Bearer {token}"
    return found


def _alertd_takes(provider: str) -> bool:
    """The verdict of alertd's own code on a non-ASCII provider name.

    Its rule for those is Unicode-deep; asking it keeps both sides identical. ASCII names, the usual
    case, take the fast path in make_item.
    """
    try:
        parse_event({"provider": provider}, 0, str)
    except InvalidEventError:
        return False
    return True


def _as_status(value: Any) -> int:
    """`value` as an HTTP status from 100 to 599, or 0 when it is not one."""
    if value.__class__ is int:
        status = value
    elif isinstance(value, float) and value.is_integer():
        status = int(value)  # 503.0 is 503 on the wire too (alertd/event.py)
    elif isinstance(value, int) and not isinstance(value, bool):
        status = int(value)  # an IntEnum such as HTTPStatus becomes a plain int
    else:
        return 0
    return status if 100 <= status <= 599 else 0


def make_item(  # noqa: PLR0911, PLR0917 - flat and positional on purpose: this runs on every report()
    provider: Any,
    route: Any,
    request_id: Any,
    api_key: Any,
    error_type: Any,
    status: Any,
    message: Any,
) -> Item | None:
    """The buffered form of one failure, or None when alertd would reject it (see alertd/event.py).

    The rules are alertd's own (the same code for non-ASCII provider names): provider 1-128 printable
    characters without spaces or invisible ones; route, request_id, api_key and error_type strings
    within their limits; status an integer from 100 to 599. A message is cut to alertd's limit, as
    alertd would cut it. Written flat, without helper calls: it is the whole cost of report().
    """
    if (
        not isinstance(provider, str)
        or not 0 < len(provider) <= MAX_PROVIDER_CHARS
        or not (provider.isprintable() and " " not in provider if provider.isascii() else _alertd_takes(provider))
    ):
        return None
    if route is not None and (not isinstance(route, str) or len(route) > _ROUTE_MAX):
        return None
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > _REQUEST_ID_MAX):
        return None
    if api_key is not None and (not isinstance(api_key, str) or len(api_key) > _API_KEY_MAX):
        return None
    if error_type is not None and (not isinstance(error_type, str) or len(error_type) > _ERROR_TYPE_MAX):
        return None
    if status is not None:
        status = _as_status(status)
        if not status:
            return None
    if message is not None:
        if not isinstance(message, str):
            return None
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS]
    return (provider, route, request_id, api_key, error_type, status, message, _now())


_now = time.time
# json.dumps() with its default arguments reuses one C encoder; any other argument builds a new one per call.
_encode = json.dumps


def encode(item: Item) -> bytes:
    """One NDJSON line (with its newline). ASCII-only JSON: a lone surrogate cannot break the encoding."""
    provider, route, request_id, api_key, error_type, status, message, timestamp = item
    body: dict[str, object] = {"provider": provider}
    if route is not None:
        body["route"] = route
    if request_id is not None:
        body["request_id"] = request_id
    if api_key is not None:
        body["api_key"] = api_key
    if error_type is not None:
        body["error_type"] = error_type
    if status is not None:
        body["status"] = status
    if message is not None:
        body["message"] = message
    body["timestamp"] = timestamp
    return (_encode(body) + "\n").encode("ascii")


@dataclass(frozen=True, slots=True)
class ReporterStats:
    """A reporter's counters since it was created.

    Every event reported is `sent`, counted in one `dropped_*` counter, or still `queued` or `in_flight`:
    `reported == sent + dropped + queued + in_flight` (while `errors` is 0).
    """

    reported: int
    """report() calls (valid or not)."""
    sent: int
    """Events alertd acknowledged (202)."""
    queued: int
    """Events waiting in the buffer now."""
    in_flight: int
    """Events in the batch being sent (or waiting for a retry) now."""
    dropped_overflow: int
    """The oldest events, dropped because the buffer was full (alertd down or too slow)."""
    dropped_invalid: int
    """report() calls whose event alertd would reject (e.g. an empty provider); never sent."""
    dropped_rejected: int
    """Events alertd refused for good (a 4xx answer such as 401 with a wrong token, or 413 for one event)."""
    dropped_closed: int
    """Events reported after close, or still unsent when close() ran out of time."""
    send_failures: int
    """Failed attempts to deliver a batch (connection refused, timeout, 5xx); each is retried."""
    errors: int
    """Unexpected exceptions swallowed so that they never reach the router (should stay 0)."""
    last_error: str | None
    """What went wrong last, for the router's own diagnostics (never contains the token or a key)."""

    @property
    def dropped(self) -> int:
        """Every event that will never reach alertd."""
        return self.dropped_overflow + self.dropped_invalid + self.dropped_rejected + self.dropped_closed


class Buffer:
    """The bounded buffer of events and the counters; every method is thread-safe and never blocks on I/O."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.lock = threading.Lock()
        self.items: deque[Item] = deque()
        self.closed = False
        self.in_flight = 0
        self.reported = 0
        self.sent = 0
        self.dropped_overflow = 0
        self.dropped_invalid = 0
        self.dropped_rejected = 0
        self.dropped_closed = 0
        self.send_failures = 0
        self.errors = 0
        self.last_error: str | None = None
        self.down = False
        self.final = False  # after drop_remaining(): a late give_back or settle changes nothing

    def put(self, item: Item) -> int:
        """Buffer `item`, dropping the oldest if full; the new length, or 0 when closed."""
        with self.lock:
            self.reported += 1
            if self.closed:
                self.dropped_closed += 1
                return 0
            items = self.items
            if len(items) >= self.capacity:
                items.popleft()
                self.dropped_overflow += 1
            items.append(item)
            return len(items)

    def invalid(self) -> None:
        """Count one event refused by local validation."""
        with self.lock:
            self.reported += 1
            self.dropped_invalid += 1

    def error(self, what: str) -> None:
        """Count one swallowed exception."""
        with self.lock:
            self.errors += 1
            self.last_error = what

    def take(self, count: int, max_bytes: int) -> Batch:
        """Up to `count` of the oldest events, encoded, within `max_bytes` (at least one event)."""
        with self.lock:
            items = [self.items.popleft() for _ in range(min(count, len(self.items)))]
            self.in_flight += len(items)
        batch: Batch = []
        size = 0
        for index, item in enumerate(items):
            line = encode(item)
            if batch and size + len(line) > max_bytes:
                self.give_back([(rest, b"") for rest in items[index:]])
                break
            batch.append((item, line))
            size += len(line)
        return batch

    def give_back(self, batch: Batch) -> None:
        """Return an unsent batch to the front (it is older than anything buffered); trim to capacity."""
        with self.lock:
            if self.final:
                return
            self.in_flight -= len(batch)
            self.items.extendleft(item for item, _ in reversed(batch))
            excess = len(self.items) - self.capacity
            for _ in range(max(0, excess)):
                self.items.popleft()
            self.dropped_overflow += max(0, excess)

    def settle(self, count: int, *, sent: int = 0, rejected: int = 0) -> None:
        """`count` in-flight events are done: `sent` acknowledged, `rejected` refused, the rest dropped at close."""
        with self.lock:
            if self.final:
                return
            self.in_flight -= count
            self.sent += sent
            self.dropped_rejected += rejected
            self.dropped_closed += count - sent - rejected

    def failed(self, what: str) -> bool:
        """Count a failed delivery; True when it is the first since the last success."""
        with self.lock:
            first = not self.down
            self.down = True
            self.send_failures += 1
            self.last_error = f"send failed: {what}"
            return first

    def delivered(self) -> bool:
        """A delivery succeeded; True when alertd was down before."""
        with self.lock:
            was_down = self.down
            self.down = False
            return was_down

    def close(self) -> None:
        """Refuse further events."""
        with self.lock:
            self.closed = True

    def drop_remaining(self) -> int:
        """Count everything still buffered or in flight as dropped at close; how many."""
        with self.lock:
            count = len(self.items) + self.in_flight
            self.final = True
            self.items.clear()
            self.dropped_closed += count
            self.in_flight = 0
            return count

    def reject_all(self) -> None:
        """Count everything buffered as rejected (the reporter has no usable address)."""
        with self.lock:
            self.dropped_rejected += len(self.items)
            self.items.clear()

    def stats(self) -> ReporterStats:
        """A consistent snapshot of the counters."""
        with self.lock:
            return ReporterStats(
                reported=self.reported,
                sent=self.sent,
                queued=len(self.items),
                in_flight=self.in_flight,
                dropped_overflow=self.dropped_overflow,
                dropped_invalid=self.dropped_invalid,
                dropped_rejected=self.dropped_rejected,
                dropped_closed=self.dropped_closed,
                send_failures=self.send_failures,
                errors=self.errors,
                last_error=self.last_error,
            )


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with a batch after alertd answered `status` with `body`."""

    action: str  # "sent", "retry", "reject", "split", "drop_one"
    accepted: int = 0
    index: int = 0


def judge(status: int, body: bytes, size: int) -> Verdict:  # noqa: PLR0911 - one answer per status class
    """Decide from alertd's answer to a batch of `size` events."""
    if status == 202:
        return Verdict("sent", accepted=size)
    if status == 413 and size > 1:
        return Verdict("split")
    if status == 400:
        # Local validation should prevent this; if alertd's rules ever differ, drop only the bad event.
        try:
            index = json.loads(body)["index"]
        except (ValueError, KeyError, TypeError):
            return Verdict("reject")
        if isinstance(index, int) and 0 <= index < size:
            return Verdict("drop_one", index=index)
        return Verdict("reject")
    if status in (408, 429) or status >= 500:
        return Verdict("retry")
    return Verdict("reject")


class Backoff:
    """Exponential backoff with jitter between failed deliveries: 0.1 s doubling to `maximum`."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self.current = 0.0
        # Its own generator: a library must not advance its host's global random state.
        self._random = random.Random()  # noqa: S311 - jitter, not cryptography

    def next(self) -> float:
        """The next delay."""
        self.current = min(self.maximum, self.current * 2 if self.current else self.initial)
        return self._random.uniform(self.current / 2, self.current)

    def reset(self) -> None:
        """After a success."""
        self.current = 0.0


@dataclass(frozen=True, slots=True)
class Settings:
    """The knobs both reporters take."""

    capacity: int = 10_000
    batch_size: int = 500
    interval: float = 0.1
    timeout: float = 2.0
    max_batch_bytes: int = 512 * 1024
    max_backoff: float = 5.0

    def checked(self) -> Settings:
        """These settings with out-of-range values replaced by the defaults."""
        d = Settings()
        return Settings(
            capacity=self.capacity if self.capacity >= 1 else d.capacity,
            batch_size=self.batch_size if self.batch_size >= 1 else d.batch_size,
            interval=self.interval if self.interval > 0 else d.interval,
            timeout=self.timeout if self.timeout > 0 else d.timeout,
            max_batch_bytes=self.max_batch_bytes if self.max_batch_bytes >= 1 else d.max_batch_bytes,
            max_backoff=self.max_backoff if self.max_backoff > 0 else d.max_backoff,
        )


def describe(exc: BaseException) -> str:
    """A short description of a delivery error for `last_error` and the log."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


def apply_answer(buffer: Buffer, batch: Batch, status: int, body: bytes) -> list[Batch] | None:
    """Settle `batch` after alertd's answer; the parts to send at once, or None to retry it later."""
    verdict = judge(status, body, len(batch))
    if verdict.action == "sent":
        buffer.settle(len(batch), sent=len(batch))
        return []
    if verdict.action == "retry":
        return None
    if verdict.action == "split":
        half = len(batch) // 2
        return [batch[:half], batch[half:]]
    if verdict.action == "drop_one":
        buffer.settle(1, rejected=1)
        with buffer.lock:
            buffer.last_error = f"alertd rejected an event: {body[:200].decode('utf-8', 'replace')}"
        rest = batch[: verdict.index] + batch[verdict.index + 1 :]
        return [rest] if rest else []
    buffer.settle(len(batch), rejected=len(batch))
    with buffer.lock:
        buffer.last_error = f"alertd answered {status}: {body[:200].decode('utf-8', 'replace')}"
    log.warning("alertd refused a batch of %d events with status %d; they are dropped", len(batch), status)
    return []


class ReporterBase:
    """The router-facing half shared by both reporters: `report()` and `stats()`."""

    def __init__(self, address: str, token: str | None, settings: Settings) -> None:
        self._settings = settings.checked()
        self._buffer = Buffer(self._settings.capacity)
        self._batch_size = self._settings.batch_size
        self._headers = headers(token)
        self._target: Target | None = None
        try:
            self._target = Target.parse(address)
        except ValueError as exc:
            # A wrong address must not stop the router: every event is counted as rejected instead.
            self._buffer.last_error = f"bad alertd address: {exc}"
            log.error("alertd reporter disabled: %s", exc)  # noqa: TRY400 - no traceback wanted
        self._started = False

    def report(
        self,
        provider: str,
        *,
        route: str | None = None,
        request_id: str | None = None,
        api_key: str | None = None,
        error_type: str | None = None,
        status: int | None = None,
        message: str | None = None,
    ) -> bool:
        """Queue one failed upstream call; never blocks, never raises. True when it was queued."""
        try:
            item = make_item(provider, route, request_id, api_key, error_type, status, message)
            if item is None:
                self._buffer.invalid()
                return False
            length = self._buffer.put(item)
            if not self._started:
                self._start()
            if length >= self._batch_size:
                self._wake()
        except Exception as exc:
            self._count_error(exc)
            return False
        return length > 0

    def stats(self) -> ReporterStats:
        """The counters: sent, dropped (by reason), queued, failures. Never raises."""
        try:
            return self._buffer.stats()
        except Exception as exc:  # pragma: no cover - a snapshot of ints cannot fail
            self._count_error(exc)
            return ReporterStats(0, 0, 0, 0, 0, 0, 0, 0, 0, 1, describe(exc))

    def _count_error(self, exc: BaseException) -> None:
        try:
            self._buffer.error(f"internal error: {describe(exc)}")
            log.debug("alertd reporter swallowed an error", exc_info=exc)
        except Exception:  # noqa: S110 - the last line of defence must not raise either
            pass

    def _start(self) -> None:
        raise NotImplementedError

    def _wake(self) -> None:
        raise NotImplementedError

    def _down(self, what: str) -> None:
        if self._buffer.failed(what):
            log.warning("alertd is unreachable (%s); buffering failures and retrying", what)

    def _up(self) -> None:
        if self._buffer.delivered():
            log.info("alertd is reachable again; %s", self._buffer.stats())
