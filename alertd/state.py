"""ALERTD_STATE_FILE: the tracker's state and the API silences, kept across restarts (per-pod mode).

The file's edge: an atomic write (a temporary file in the same directory, fsync, rename, fsync of the
directory), the read, and moving a bad file aside. The document itself is alertd/snapshot.py's. The
blocking parts run in a worker thread; the document is built on the event loop, so it is consistent.
docs/RELIABILITY.md, "State across restarts", says what is kept and what a crash loses.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio
from structlog.typing import FilteringBoundLogger

from alertd import snapshot
from alertd.errors import StateError
from alertd.metrics import Metrics
from alertd.silences import SilenceStore
from alertd.tracker import MemoryTracker

# A larger file is not read (it is moved aside as corrupt), and a larger document is not written.
MAX_STATE_BYTES = 256 * 1024 * 1024


def write_atomic(path: str, data: bytes) -> None:
    """Replace `path` with `data` atomically: readers see the old file or the new one, never a part.

    The temporary file is created beside `path` (mode 0600), written, fsynced and renamed over `path`;
    then the directory is fsynced so that the rename itself survives a power loss.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    directory_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def read_state(path: str) -> bytes | None:
    """The file's bytes, or None when it does not exist; raises OSError, or StateError when it is too large."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(data) > MAX_STATE_BYTES:
        raise StateError(f"larger than {MAX_STATE_BYTES} bytes")
    return data


def move_aside(path: str, wall_now: float) -> str:
    """Rename `path` to `<path>.corrupt-<UTC time>` (bytes intact); returns the new name."""
    stamp = datetime.fromtimestamp(wall_now, UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    target = f"{path}.corrupt-{stamp}"
    os.replace(path, target)
    return target


class StateKeeper:
    """Restores ALERTD_STATE_FILE at startup and writes it: periodically when something changed, and at shutdown."""

    def __init__(
        self,
        path: str,
        tracker: MemoryTracker,
        silences: SilenceStore | None,
        log: FilteringBoundLogger,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.tracker = tracker
        self.silences = silences
        self.log = log
        self.metrics = metrics
        self.clock = clock
        self.wall_clock = wall_clock
        # What the last write (or the restore) held, to skip a periodic snapshot when nothing changed.
        self._written: tuple[int, list[dict[str, Any]]] | None = None

    def _fingerprint(self) -> tuple[int, list[dict[str, Any]]]:
        return self.tracker.changes, [] if self.silences is None else self.silences.snapshot()

    async def restore(self) -> None:
        """Read the file and put its state back; a missing file is normal, a bad one is moved aside.

        Never raises for the file's sake: alertd then starts empty.
        """
        path = self.path
        try:
            data = await anyio.to_thread.run_sync(read_state, path)
            if data is None:
                self.log.info("state_file_absent", path=path, detail="starting empty; it is written at shutdown")
                self._written = self._fingerprint()
                return
            document = await anyio.to_thread.run_sync(snapshot.decode, data)
            wall_now, now = self.wall_clock(), self.clock()
            restored = snapshot.restore(document, self.tracker, self.silences, offset=wall_now - now, now=now)
        except (OSError, StateError) as exc:
            self._set_aside(exc)
            return
        if self.metrics is not None:
            for provider, window, _ in self.tracker.export_entries():
                self.metrics.add_provider(provider)
                if window.episode_start is not None:
                    self.metrics.set_firing(provider, firing=True)
        self._written = self._fingerprint()
        self.log.info(
            "state_restored",
            path=path,
            providers=restored.providers,
            silences=restored.silences,
            age_seconds=round(wall_now - restored.saved_at, 3),
        )

    def _set_aside(self, exc: OSError | StateError) -> None:
        reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, OSError) else str(exc)
        try:
            moved: str | None = move_aside(self.path, self.wall_clock())
        except OSError as move_error:
            moved = None
            reason += f"; could not move it aside: {move_error.strerror or move_error}"
        self.log.error(
            "state_file_corrupt", path=self.path, moved_to=moved, reason=reason[:500], detail="starting empty"
        )

    async def save(self, reason: str, *, force: bool = False) -> bool:
        """Write the state now (`reason`: `periodic` or `shutdown`); unless `force`, skip it when nothing changed.

        Returns True when the file was written. Raises OSError when it cannot be.
        """
        fingerprint = self._fingerprint()
        if not force and fingerprint == self._written:
            return False
        start = self.clock()
        # The copy is taken on the loop (consistent: nothing else runs meanwhile); the document is made,
        # encoded and written in a worker thread.
        captured = snapshot.capture(self.tracker)
        silences = fingerprint[1]
        offset, saved_at = self.wall_clock() - start, self.wall_clock()
        data = await anyio.to_thread.run_sync(self._write, captured, silences, offset, saved_at)
        if data is None:
            return False
        self._written = fingerprint
        self.log.info(
            "state_saved",
            reason=reason,
            path=self.path,
            providers=len(captured),
            silences=len(silences),
            bytes=data,
            seconds=round(self.clock() - start, 3),
        )
        return True

    def _write(
        self, captured: list[snapshot.Captured], silences: list[dict[str, Any]], offset: float, saved_at: float
    ) -> int | None:
        data = snapshot.encode(snapshot.document(captured, silences, offset=offset, saved_at=saved_at))
        if len(data) > MAX_STATE_BYTES:
            self.log.error("state_too_large", path=self.path, bytes=len(data), limit=MAX_STATE_BYTES)
            return None
        write_atomic(self.path, data)
        return len(data)
