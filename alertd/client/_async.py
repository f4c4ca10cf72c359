# ruff: noqa: BLE001 - no exception may reach the router: each is counted in stats() instead
"""AsyncReporter: for asyncio routers; a background task sends NDJSON batches with aiohttp."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType

import aiohttp

from alertd.client._core import Backoff, Batch, ReporterBase, Settings, apply_answer, describe

_POLL = 0.01  # how often flush() looks at the buffer


class AsyncReporter(ReporterBase):
    """Reports failed upstream calls to alertd from an asyncio router without ever hurting it.

    `report()` is synchronous and O(1): it validates the event the way alertd does and appends it to a
    bounded buffer (the oldest event is dropped and counted when it is full). A background task on the
    running loop sends the buffer as NDJSON every `interval` seconds, or as soon as `batch_size` events
    wait; while alertd is down it keeps the events and retries with exponential backoff. No method
    raises: errors are counted in `stats()`.

        async with AsyncReporter("unix:/var/run/alertd/alertd.sock") as alertd:
            ...
            alertd.report("openai", route="/v1/chat/completions", status=503)

    `address` is `http://host:port` or `unix:/path/to.sock`; `token` is alertd's ALERTD_INGEST_TOKEN.
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._task: asyncio.Task[None] | None = None
        self._event: asyncio.Event | None = None  # set: a full batch waits, or aclose() wants a last try
        self._closed_event: asyncio.Event | None = None  # set by aclose(): cuts a backoff short
        self._closing = False
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AsyncReporter:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def start(self) -> None:
        """Start the sender on the running loop (report() also does it on first use). Never raises."""
        try:
            if not self._started:
                self._start()
        except Exception as exc:
            self._count_error(exc)

    def _start(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop in this thread yet: events wait in the buffer until one starts the sender
        if self._closing:
            return
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._event = asyncio.Event()
        self._closed_event = asyncio.Event()
        self._task = loop.create_task(self._run(), name="alertd-reporter")
        self._started = True

    def _wake(self) -> None:
        event, loop = self._event, self._loop
        if event is None or loop is None or event.is_set():
            return
        if threading.get_ident() == self._loop_thread:
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)

    async def flush(self, timeout: float = 2.0) -> bool:  # noqa: ASYNC109 - the bound is the API
        """Send everything buffered now; True when nothing is left, False after `timeout`. Never raises."""
        try:
            self.start()
            self._wake()
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                stats = self._buffer.stats()
                if stats.queued == 0 and stats.in_flight == 0:
                    return True
                if self._task is None or self._task.done() or asyncio.get_running_loop().time() >= deadline:
                    return False
                await asyncio.sleep(_POLL)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._count_error(exc)
            return False

    async def aclose(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - the bound is the API
        """Flush what is buffered within `timeout` (default `close_timeout`), then stop; never raises.

        Events still unsent then, and any reported afterwards, are counted as `dropped_closed`.
        """
        try:
            limit = self._close_timeout if timeout is None else timeout
            if not self._started and self._buffer.stats().queued:
                self._start()
            self._closing = True
            self._buffer.close()
            task = self._task
            if task is not None and not task.done():
                self._wake()
                if self._closed_event is not None:
                    self._closed_event.set()
                done, _ = await asyncio.wait({task}, timeout=max(0.0, limit))
                if not done:
                    task.cancel()
                    # Bounded even if the task ignored the cancel: aclose() must return.
                    await asyncio.wait({task}, timeout=1.0)
            self._buffer.drop_remaining()
            if self._session is not None:
                await self._session.close()
                self._session = None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._count_error(exc)

    async def _run(self) -> None:
        settings = self._settings
        backoff = Backoff(settings.interval, settings.max_backoff)
        delay = settings.interval
        backing_off = False
        while True:
            try:
                await self._sleep(delay, backoff=backing_off)
                delay, backing_off = settings.interval, False
                if self._target is None:
                    self._buffer.reject_all()
                elif await self._send_all():
                    backoff.reset()
                else:
                    delay, backing_off = backoff.next(), True
                if self._closing and not self._buffer.items and not self._buffer.in_flight:
                    return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._count_error(exc)
                delay, backing_off = backoff.next(), True

    async def _sleep(self, seconds: float, *, backoff: bool) -> None:
        """Wait `seconds`; a full batch cuts the wait short, except a backoff, which only aclose() cuts."""
        event = self._closed_event if backoff else self._event
        if event is None:
            return
        if not event.is_set():
            # asyncio.timeout, not wait_for: on 3.11, wait_for can swallow a cancel that races the wake-up.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await event.wait()
        # Both are one-shot: after aclose()'s immediate attempt, backoffs wait again (no busy loop).
        for one_shot in (self._event, self._closed_event):
            if one_shot is not None:
                one_shot.clear()

    async def _send_all(self) -> bool:
        """Send batches until the buffer is empty (True) or a delivery fails (False)."""
        settings = self._settings
        while True:
            batch = self._buffer.take(settings.batch_size, settings.max_batch_bytes)
            if not batch:
                return True
            pending: list[Batch] = [batch]
            try:
                while pending:
                    current = pending[0]
                    try:
                        status, body = await self._post(b"".join(line for _, line in current))
                    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                        self._down(describe(exc))
                        return False
                    parts = apply_answer(self._buffer, current, status, body)
                    if parts is None:
                        self._down(f"alertd answered {status}")
                        return False
                    pending[:1] = parts
                self._up()
            finally:
                if pending:  # not delivered (a failure, or cancelled by aclose): keep it, oldest first
                    self._buffer.give_back([pair for part in pending for pair in part])

    async def _post(self, body: bytes) -> tuple[int, bytes]:
        target = self._target
        if target is None:
            raise ConnectionError("no usable alertd address")
        session = self._session
        if session is None or session.closed:
            connector: aiohttp.BaseConnector = (
                aiohttp.UnixConnector(path=target.unix_path) if target.unix_path else aiohttp.TCPConnector(limit=4)
            )
            session = self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self._settings.timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        async with session.post(target.url, data=body) as response:
            return response.status, await response.read()
