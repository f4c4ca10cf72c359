"""Silences: operator-made mutes of alert notifications for providers matching a glob, until a time.

Pure: the standard library only, and every time is given (epoch seconds, wall clock). The HTTP side is
alertd/silence_api.py, the command line alertd/silence_cli.py; docs/SILENCES.md says what a silence does.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any, Protocol

from alertd.errors import InvalidSilenceError, SilenceLimitError
from alertd.timefmt import MAX_EPOCH, iso

# Ended silences (expired by DELETE or by time) stay listed this long, then are dropped.
LISTED_AFTER_END_SECONDS = 3600.0
MAX_ACTIVE = 1000
# A duration is at most 366 days; a later end needs an explicit ends_at.
MAX_DURATION_SECONDS = 366 * 86400.0
MAX_PROVIDERS_CHARS = 256
MAX_COMMENT_CHARS = 1024
MAX_CREATED_BY_CHARS = 256

# A character a glob may not hold: whitespace, a control character or a byte order mark. The same class
# reads the same in Python and in ECMA-262 (docs/openapi.yaml's patterns).
_FORBIDDEN = r"\s\x00-\x1f\x7f-\x9f\ufeff"
_GLOB = re.compile(rf"[^{_FORBIDDEN}]+")
_VISIBLE = re.compile(rf"[^{_FORBIDDEN}]")
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd]?)")
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True, slots=True)
class Silence:
    """One silence: notifications for providers matching `providers` are suppressed until `ends_at`."""

    id: str
    providers: str
    comment: str
    created_by: str | None
    created_at: float
    ends_at: float
    expired_at: float | None = None

    @property
    def ended_at(self) -> float:
        """When it stops (or stopped) holding: its end, or the earlier time it was expired at."""
        return self.ends_at if self.expired_at is None else min(self.expired_at, self.ends_at)

    def active(self, now: float) -> bool:
        """True while it holds: not expired, and its end not reached."""
        return now < self.ended_at

    def covers(self, provider: str, now: float) -> bool:
        """True when it is active and its glob matches `provider` (case-sensitive)."""
        return self.active(now) and fnmatchcase(provider, self.providers)

    def to_json(self, now: float) -> dict[str, Any]:
        """The API's view of it at `now`."""
        return {
            "id": self.id,
            "providers": self.providers,
            "comment": self.comment,
            "created_by": self.created_by,
            "created_at": iso(self.created_at),
            "ends_at": iso(self.ends_at),
            "active": self.active(now),
            "expired_at": None if self.expired_at is None else iso(self.expired_at),
        }

    def to_state(self) -> dict[str, Any]:
        """The state file's view of it: times as epoch seconds, exactly."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> Silence:
        """Read back what `to_state` wrote; raises ValueError on a wrong shape."""
        if not isinstance(data, dict):
            raise ValueError("a silence must be a JSON object")  # noqa: TRY004 - the state file's loader catches ValueError
        fields: dict[str, Any] = {}
        for name in ("id", "providers", "comment"):
            value = data.get(name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"silence {name} must be a non-empty string")
            fields[name] = value
        created_by = data.get("created_by")
        if created_by is not None and not isinstance(created_by, str):
            raise ValueError("silence created_by must be a string or null")
        fields["created_by"] = created_by
        for name in ("created_at", "ends_at", "expired_at"):
            value = data.get(name)
            if value is None and name == "expired_at":
                fields[name] = None
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_EPOCH:
                raise ValueError(f"silence {name} must be epoch seconds")
            fields[name] = float(value)
        return cls(**fields)


class SilenceStore:
    """API silences of one process: add, list, expire, and which one covers a provider.

    Bounded: at most `max_active` active silences (`add` raises SilenceLimitError beyond), and at most as
    many ended ones, each kept for an hour after it ended so that the listing shows it.
    """

    def __init__(self, new_id: Callable[[], str] = lambda: uuid.uuid4().hex, max_active: int = MAX_ACTIVE) -> None:
        self._new_id = new_id
        self._max_active = max_active
        self._silences: dict[str, Silence] = {}

    def add(self, providers: str, ends_at: float, comment: str, created_by: str | None, now: float) -> Silence:
        """Create a silence from `now` to `ends_at`; raises SilenceLimitError when too many are active."""
        self._purge(now)
        active = sum(1 for s in self._silences.values() if s.active(now))
        if active >= self._max_active:
            raise SilenceLimitError(self._max_active)
        silence = Silence(self._new_id(), providers, comment, created_by, now, ends_at)
        self._silences[silence.id] = silence
        return silence

    def expire(self, silence_id: str, now: float) -> bool:
        """End a silence now. False when the id is unknown (or ended over an hour ago); an ended one is left as is."""
        self._purge(now)
        silence = self._silences.get(silence_id)
        if silence is None:
            return False
        if silence.active(now):
            self._silences[silence_id] = replace(silence, expired_at=now)
        return True

    def listing(self, now: float) -> list[Silence]:
        """The active silences and those that ended in the last hour, oldest first."""
        self._purge(now)
        return sorted(self._silences.values(), key=lambda s: (s.created_at, s.id))

    def covering(self, provider: str, now: float) -> Silence | None:
        """An active silence covering `provider`: the one ending last, if several do."""
        covering = [s for s in self._silences.values() if s.covers(provider, now)]
        return max(covering, key=lambda s: (s.ended_at, s.id), default=None)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every silence kept (active or recently ended), for the state file; read back with Silence.from_json."""
        return [s.to_state() for s in sorted(self._silences.values(), key=lambda s: (s.created_at, s.id))]

    def restore(self, items: list[Silence]) -> None:
        """Add silences read from the state file (an id already present is replaced); the bounds still hold."""
        for silence in items:
            self._silences[silence.id] = silence
        latest = max((s.created_at for s in self._silences.values()), default=0.0)
        self._bound(latest)

    def _purge(self, now: float) -> None:
        old = [i for i, s in self._silences.items() if s.ended_at <= now - LISTED_AFTER_END_SECONDS]
        for silence_id in old:
            del self._silences[silence_id]
        self._bound(now)

    def _bound(self, now: float) -> None:
        """Keep at most `max_active` active and as many ended silences: the ones ending last."""
        for is_active in (True, False):
            group = [s for s in self._silences.values() if s.active(now) == is_active]
            if len(group) > self._max_active:
                group.sort(key=lambda s: (s.ended_at, s.id))
                for silence in group[: len(group) - self._max_active]:
                    del self._silences[silence.id]


def parse_silence_request(body: object, now: float) -> tuple[str, float, str, str | None]:
    """The (providers, ends_at, comment, created_by) of a `POST /v1/silences` body.

    Raises InvalidSilenceError naming the first bad field.
    """
    if not isinstance(body, dict):
        raise InvalidSilenceError("body", "must be a JSON object")
    providers = body.get("providers")
    if not isinstance(providers, str) or not providers:
        raise InvalidSilenceError("providers", "is required: a glob such as 'openai' or 'bedrock-*'")
    if len(providers) > MAX_PROVIDERS_CHARS or not _GLOB.fullmatch(providers):
        raise InvalidSilenceError(
            "providers", f"must be at most {MAX_PROVIDERS_CHARS} characters, without whitespace or control characters"
        )
    comment = body.get("comment")
    if not isinstance(comment, str) or not _VISIBLE.search(comment):
        raise InvalidSilenceError("comment", "is required: a non-empty string saying why")
    if len(comment) > MAX_COMMENT_CHARS:
        raise InvalidSilenceError("comment", f"must be at most {MAX_COMMENT_CHARS} characters")
    created_by = body.get("created_by")
    if created_by is not None and (not isinstance(created_by, str) or len(created_by) > MAX_CREATED_BY_CHARS):
        raise InvalidSilenceError("created_by", f"must be a string of at most {MAX_CREATED_BY_CHARS} characters")
    return providers, _parse_end(body, now), comment, created_by


def _parse_end(body: dict[Any, Any], now: float) -> float:
    """When the silence ends: `ends_at`, or `duration_seconds` from `now`."""
    if "ends_at" in body and "duration_seconds" in body:
        raise InvalidSilenceError("ends_at", "and duration_seconds cannot both be given: give one")
    if "duration_seconds" in body:
        duration = body["duration_seconds"]
        if (
            isinstance(duration, bool)
            or not isinstance(duration, int | float)
            or not 0 < duration <= MAX_DURATION_SECONDS  # also refuses NaN and infinities
        ):
            raise InvalidSilenceError(
                "duration_seconds", f"must be a number of seconds > 0 and <= {MAX_DURATION_SECONDS:.0f}"
            )
        return now + float(duration)
    if "ends_at" not in body:
        raise InvalidSilenceError("ends_at", "or duration_seconds is required: when the silence ends")
    ends_at = _parse_rfc3339(body["ends_at"])
    if ends_at is None:
        raise InvalidSilenceError("ends_at", "must be an RFC 3339 time with a UTC offset, e.g. 2026-11-27T18:00:00Z")
    if ends_at > MAX_EPOCH:
        raise InvalidSilenceError("ends_at", "must be in year 9999 or earlier (UTC)")
    if ends_at <= now:
        raise InvalidSilenceError("ends_at", "is in the past")
    return ends_at


def _parse_rfc3339(value: object) -> float | None:
    if not isinstance(value, str) or len(value) > 64 or not _RFC3339.fullmatch(value):
        return None
    try:
        epoch = datetime.fromisoformat(value.upper().replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):
        return None
    return epoch


def parse_duration(text: str) -> float:
    """Seconds in `90`, `90s`, `30m`, `2h` or `1d` (fractions allowed: `1.5h`); raises ValueError.

    A duration is > 0 and at most 366 days.
    """
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 90, 90s, 30m or 2h")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not 0 < seconds <= MAX_DURATION_SECONDS or not math.isfinite(seconds):
        raise ValueError(f"{text!r} is not a duration > 0 and at most 366 days")
    return seconds


class SilenceBackend(Protocol):
    """Where the API's silences live: this process's memory, or Redis in cluster mode."""

    async def add(self, providers: str, ends_at: float, comment: str, created_by: str | None) -> Silence:
        """Create a silence from now to `ends_at`; raises SilenceLimitError when too many are active."""
        ...

    async def expire(self, silence_id: str) -> bool:
        """End a silence now; False when the id is unknown (or it ended over an hour ago)."""
        ...

    async def listing(self) -> list[Silence]:
        """The active silences and those that ended in the last hour."""
        ...

    async def covering(self, provider: str) -> Silence | None:
        """The active silence covering `provider` (the one ending last), if any."""
        ...


class MemorySilences:
    """The silences of this process (per-pod mode): a SilenceStore read at the wall clock's time."""

    def __init__(self, store: SilenceStore, wall_clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._wall_clock = wall_clock

    async def add(self, providers: str, ends_at: float, comment: str, created_by: str | None) -> Silence:
        """Create a silence from now to `ends_at`; raises SilenceLimitError when too many are active."""
        return self.store.add(providers, ends_at, comment, created_by, self._wall_clock())

    async def expire(self, silence_id: str) -> bool:
        """End a silence now; False when the id is unknown (or it ended over an hour ago)."""
        return self.store.expire(silence_id, self._wall_clock())

    async def listing(self) -> list[Silence]:
        """The active silences and those that ended in the last hour."""
        return self.store.listing(self._wall_clock())

    async def covering(self, provider: str) -> Silence | None:
        """The active silence covering `provider` (the one ending last), if any."""
        return self.store.covering(provider, self._wall_clock())
