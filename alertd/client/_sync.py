# ruff: noqa: BLE001 - no exception may reach the router: each is counted in stats() instead
"""Reporter: for synchronous routers (Flask, Django); a daemon thread sends NDJSON batches with http.client."""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
import weakref
from types import TracebackType

from alertd.client._core import Backoff, Batch, Buffer, ReporterBase, Settings, Target, apply_answer, describe

_POLL = 0.01  # how often flush() looks at the buffer
_IDLE_RECONNECT = 10.0  # seconds after which a kept-alive connection is not trusted any more


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a Unix domain socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("alertd", timeout=timeout)
        self._unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _connection(target: Target, timeout: float) -> http.client.HTTPConnection:
    if target.unix_path is not None:
        return _UnixHTTPConnection(target.unix_path, timeout)
    if target.tls:
        return http.client.HTTPSConnection(target.host, target.port, timeout=timeout)
    return http.client.HTTPConnection(target.host, target.port, timeout=timeout)


class Reporter(ReporterBase):
    """Reports failed upstream calls to alertd from a synchronous router without ever hurting it.

    The same contract as `AsyncReporter`, with a daemon thread instead of a task and only the standard
    library for HTTP: `report()` validates and buffers (O(1), never blocks on the network, never raises);
    the thread sends NDJSON batches every `interval` seconds or at `batch_size` events, retries with
    backoff while alertd is down, and drops (and counts) the oldest events when the buffer is full.

        alertd = Reporter("unix:/var/run/alertd/alertd.sock")   # once, at start-up
        alertd.report("openai", route="/v1/chat/completions", status=503)

    The thread starts on first use, also again in a child after `fork()` (gunicorn's pre-fork workers).
    Call `close()` (or use `with`) at shutdown to flush, bounded by `close_timeout`.
    """

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        capacity: int = 10_000,
        batch_size: int = 500,
        interval: float = 0.1,
        timeout: float = 2.0,
        max_batch_bytes: int = 512 * 1024,
        max_backoff: float = 5.0,
        close_timeout: float = 2.0,
    ) -> None:
        super().__init__(
            address,
            token,
            Settings(capacity, batch_size, interval, timeout, max_batch_bytes, max_backoff),
        )
        self._close_timeout = close_timeout
        self._event = threading.Event()  # set: a full batch waits, or close() wants a last try
        self._closed_event = threading.Event()  # set by close(): cuts a backoff short
        self._start_lock = threading.Lock()
        self._closing = False
        self._stop = False
        self._thread: threading.Thread | None = None
        self._conn: http.client.HTTPConnection | None = None
        self._conn_used = 0.0
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    def __enter__(self) -> Reporter:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start the sender thread (report() also does it on first use). Never raises."""
        try:
            if not self._started:
                self._start()
        except Exception as exc:
            self._count_error(exc)

    def _start(self) -> None:
        with self._start_lock:
            if self._started or self._closing:
                return
            thread = threading.Thread(target=self._run, name="alertd-reporter", daemon=True)
            thread.start()
            self._thread = thread
            self._started = True

    def _wake(self) -> None:
        self._event.set()

    def flush(self, timeout: float = 2.0) -> bool:
        """Send everything buffered now; True when nothing is left, False after `timeout`. Never raises."""
        try:
            self.start()
            self._wake()
            deadline = time.monotonic() + timeout
            while True:
                stats = self._buffer.stats()
                if stats.queued == 0 and stats.in_flight == 0:
                    return True
                thread = self._thread
                if thread is None or not thread.is_alive() or time.monotonic() >= deadline:
                    return False
                time.sleep(_POLL)
        except Exception as exc:
            self._count_error(exc)
            return False

    def close(self, timeout: float | None = None) -> None:
        """Flush what is buffered within `timeout` (default `close_timeout`), then stop; never raises.

        Events still unsent then, and any reported afterwards, are counted as `dropped_closed`.
        """
        try:
            limit = self._close_timeout if timeout is None else timeout
            if not self._started and self._buffer.stats().queued:
                self._start()
            with self._start_lock:
                self._closing = True
            self._buffer.close()
            self._wake()
            self._closed_event.set()
            thread = self._thread
            if thread is not None:
                thread.join(max(0.0, limit))
                self._stop = True  # a thread still blocked in a send gives its batch back and exits
                self._wake()
                self._closed_event.set()
            self._buffer.drop_remaining()
        except Exception as exc:
            self._count_error(exc)

    def _run(self) -> None:
        settings = self._settings
        backoff = Backoff(settings.interval, settings.max_backoff)
        delay = settings.interval
        backing_off = False
        while not self._stop:
            try:
                # A full batch cuts the interval short; only close() cuts a backoff short.
                (self._closed_event if backing_off else self._event).wait(delay)
                # Both are one-shot: after close()'s immediate attempt, backoffs wait again (no busy loop).
                self._event.clear()
                self._closed_event.clear()
                delay, backing_off = settings.interval, False
                if self._target is None:
                    self._buffer.reject_all()
                elif self._send_all():
                    backoff.reset()
                else:
                    delay, backing_off = backoff.next(), True
                if self._closing and not self._buffer.items and not self._buffer.in_flight:
                    break
            except Exception as exc:
                self._count_error(exc)
                delay, backing_off = backoff.next(), True
        self._disconnect()

    def _send_all(self) -> bool:
        """Send batches until the buffer is empty (True) or a delivery fails (False)."""
        settings = self._settings
        while not self._stop:
            batch = self._buffer.take(settings.batch_size, settings.max_batch_bytes)
            if not batch:
                return True
            pending: list[Batch] = [batch]
            try:
                while pending and not self._stop:
                    current = pending[0]
                    try:
                        status, body = self._post(b"".join(line for _, line in current))
                    except (OSError, http.client.HTTPException, ValueError) as exc:
                        self._down(describe(exc))
                        return False
                    parts = apply_answer(self._buffer, current, status, body)
                    if parts is None:
                        self._down(f"alertd answered {status}")
                        return False
                    pending[:1] = parts
                if not pending:
                    self._up()
            finally:
                if pending:  # not delivered: keep it, oldest first
                    self._buffer.give_back([pair for part in pending for pair in part])
        return False

    def _post(self, body: bytes) -> tuple[int, bytes]:
        target = self._target
        if target is None:
            raise ConnectionError("no usable alertd address")
        now = time.monotonic()
        if self._conn is not None and now - self._conn_used > _IDLE_RECONNECT:
            self._disconnect()
        reused = self._conn is not None
        for attempt in range(2):
            if self._conn is None:
                self._conn = _connection(target, self._settings.timeout)
            try:
                self._conn.request("POST", target.path, body=body, headers=self._headers)
                response = self._conn.getresponse()
                data = response.read()
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                self._disconnect()
                if reused and attempt == 0:
                    continue  # the kept-alive connection was closed by alertd: one fresh try
                raise
            except BaseException:
                self._disconnect()
                raise
            self._conn_used = time.monotonic()
            if response.will_close:
                self._disconnect()
            return response.status, data
        raise ConnectionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _after_fork(self) -> None:
        """In a forked child: the sender thread did not survive; start a new one on next use."""
        self._start_lock = threading.Lock()
        self._event = threading.Event()
        self._closed_event = threading.Event()
        # The parent's queued events are the parent's to send: the child starts empty, with its own counters.
        self._buffer = Buffer(self._settings.capacity)
        self._thread = None
        self._conn = None  # the parent's socket is not ours to use
        self._started = False


def _after_fork(ref: weakref.ref[Reporter]) -> None:
    reporter = ref()
    if reporter is not None:
        reporter._after_fork()
