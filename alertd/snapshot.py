"""The state file's document: built from a MemoryTracker and the API silences, and restored into them.

Pure: the standard library and the core only; every time is given. Times in the document are wall-clock
epoch seconds; `offset` (wall clock minus monotonic clock, at the moment of the build or the restore)
maps them to and from the tracker's monotonic clock. The file's edge (atomic write, read, moving a bad
file aside) is alertd/state.py; docs/RELIABILITY.md, "State across restarts", says what is kept.

Restoring validates the whole document before it changes anything: a wrong shape, a type, a non-finite
number or a size past its bound raises StateError, never anything else.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import msgspec

from alertd.errors import StateError
from alertd.event import MAX_CHARS, MAX_MESSAGE_CHARS, MAX_PROVIDER_CHARS, FailureEvent
from alertd.silences import (
    MAX_ACTIVE,
    MAX_COMMENT_CHARS,
    MAX_CREATED_BY_CHARS,
    MAX_PROVIDERS_CHARS,
    Silence,
    SilenceStore,
)
from alertd.timefmt import MAX_EPOCH
from alertd.tracker import RECENT_SAMPLES, MemoryTracker
from alertd.window import BUCKETS, Episode, ProviderWindow, Rule, carry_cooldowns

VERSION = 1
# Bounds on what a document may hold; past them it is corrupt. A rule keeps at most 10,000 arrival times
# and as many tiers (thresholds are capped at 10,000); a store keeps MAX_ACTIVE active and as many ended silences.
MAX_PROVIDERS = 1_000_000
MAX_TIMES = 10_000
MAX_COUNT = 2**53
MAX_SILENCES = 2 * MAX_ACTIVE
MAX_SILENCE_ID_CHARS = 128
MAX_LEVEL_CHARS = 64
_EVENT_STRINGS = {**MAX_CHARS, "provider": MAX_PROVIDER_CHARS, "message": MAX_MESSAGE_CHARS}


@dataclass(frozen=True, slots=True)
class Restored:
    """What a restore put back: providers tracked, silences kept, and when the document was saved (epoch)."""

    providers: int
    silences: int
    saved_at: float


@dataclass(frozen=True, slots=True)
class _Provider:
    """One provider as validated from the document; times are epoch seconds."""

    name: str
    recent: list[float]
    bucket_seconds: float
    buckets: list[tuple[int, float, float]]
    cooldowns: list[float | None]
    # The level of each cooldown's tier, or None in a document of an alertd that did not save them.
    levels: list[str] | None
    last_alert: float | None
    alert_tier: int
    throttled_since_alert: int
    totals: tuple[int, int, int]
    episode: tuple[float, int, int, int, float] | None
    last_resolved: float | None
    samples: list[tuple[float, FailureEvent]]


@dataclass(frozen=True, slots=True)
class Captured:
    """One provider's state copied out of its window, in monotonic seconds: immutable, so another thread may read it."""

    provider: str
    recent: tuple[float, ...]
    bucket_seconds: float
    buckets: list[tuple[int, float, float]]
    cooldowns: tuple[float | None, ...]
    levels: tuple[str, ...]
    last_alert: float | None
    alert_tier: int
    throttled_since_alert: int
    totals: tuple[int, int, int]
    episode: Episode | None
    last_resolved: float | None
    samples: tuple[tuple[float, FailureEvent], ...]


def capture(tracker: MemoryTracker) -> list[Captured]:
    """A consistent copy of every provider's state: take it on the event loop, with nothing else running.

    The cheap part of a snapshot; `document` (the costly part, in a worker thread) then reads only the copy.
    """
    return [
        Captured(
            name,
            tuple(window.recent),
            window.bucket_seconds,
            window.bucket_counts(),
            tuple(window.cooldowns),
            tuple(level for _, level in window.rule.levels),
            window.last_alert,
            window.alert_tier,
            window.throttled_since_alert,
            (window.failures_total, window.alerts_total, window.throttled_total),
            window.episode,
            window.last_resolved,
            samples,
        )
        for name, window, samples in tracker.export_entries()
    ]


def document(
    captured: list[Captured], silences: list[dict[str, Any]], *, offset: float, saved_at: float
) -> dict[str, Any]:
    """The document of a capture and a silences snapshot; `offset` maps monotonic times to epoch (wall - mono)."""

    def maybe(mono: float | None) -> float | None:
        return None if mono is None else mono + offset

    providers = []
    for c in captured:
        episode = c.episode
        providers.append(
            {
                "provider": c.provider,
                "recent": [at + offset for at in c.recent],
                "bucket_seconds": c.bucket_seconds,
                "buckets": [[count, first + offset, last + offset] for count, first, last in c.buckets],
                "cooldowns": [maybe(since) for since in c.cooldowns],
                # Added within version 1: a document without it restores its cooldowns as before (_window).
                "levels": list(c.levels),
                "last_alert": maybe(c.last_alert),
                "alert_tier": c.alert_tier,
                "throttled_since_alert": c.throttled_since_alert,
                "totals": {"failures": c.totals[0], "alerts": c.totals[1], "throttled": c.totals[2]},
                "episode": None
                if episode is None
                else {
                    "started_at": episode.started_at + offset,
                    "alerts": episode.alerts,
                    "throttled": episode.throttled,
                    "failures": episode.failures,
                    "last_hit": episode.last_hit + offset,
                },
                "last_resolved": maybe(c.last_resolved),
                # Events hold the anonymized api_key only: the raw key never reaches the tracker.
                "samples": [{"at": at + offset, "event": event.to_dict()} for at, event in c.samples],
            }
        )
    return {"version": VERSION, "saved_at": saved_at, "providers": providers, "silences": silences}


def build_document(
    tracker: MemoryTracker, silences: SilenceStore | None, *, offset: float, saved_at: float
) -> dict[str, Any]:
    """The document for `tracker` and `silences` now: `capture` and `document` in one go."""
    listed = [] if silences is None else silences.snapshot()
    return document(capture(tracker), listed, offset=offset, saved_at=saved_at)


def encode(document: dict[str, Any]) -> bytes:
    """The document as compact UTF-8 JSON (msgspec: about 10x json.dumps, so less time holding the GIL)."""
    return msgspec.json.encode(document)


def decode(data: bytes) -> object:
    """Parse the file's bytes as strict JSON (UTF-8, no NaN or Infinity, no BOM); raises StateError."""
    try:
        return msgspec.json.decode(data)
    except (ValueError, RecursionError) as exc:  # msgspec.DecodeError is a ValueError
        raise StateError(f"not JSON: {exc}") from None


def restore(
    document: object,
    tracker: MemoryTracker,
    silences: SilenceStore | None,
    *,
    offset: float,
    now: float,
) -> Restored:
    """Put the document's state back into `tracker` (and `silences`); raises StateError on a wrong shape.

    `now` is the tracker's monotonic time and `offset` wall minus monotonic time, both at the restore. Each
    provider is judged by the rule in force now (`tracker.rule_for`): failures older than its window,
    ended cooldowns and providers left idle are dropped; an open episode is kept even past its deadline,
    and resolves as soon as the tracker is asked. Nothing changes unless the whole document is valid.
    """
    doc = _object(document, "the document")
    version = doc.get("version")
    if version != VERSION or isinstance(version, bool):
        raise StateError(f"version must be {VERSION}, not {version!r}")
    saved_at = _epoch(doc.get("saved_at"), "saved_at")
    items = _list(doc.get("providers"), "providers", MAX_PROVIDERS)
    providers = [_provider(item, index) for index, item in enumerate(items)]
    names = [p.name for p in providers]
    if len(set(names)) != len(names):
        raise StateError("providers: a provider appears twice")
    kept = [_silence(item, index) for index, item in enumerate(_list(doc.get("silences"), "silences", MAX_SILENCES))]
    restored = 0
    # The most recently seen come last: past the cap, the least recently seen are the ones left out.
    for provider in providers[max(0, len(providers) - tracker.max_providers) :]:
        rebuilt = _window(provider, tracker.rule_for(provider.name), offset, now)
        if rebuilt is not None:
            window, samples = rebuilt
            tracker.import_entry(provider.name, window, samples)
            restored += 1
    if silences is not None and kept:
        silences.restore(kept)
    return Restored(providers=restored, silences=len(kept) if silences is not None else 0, saved_at=saved_at)


def _window(
    p: _Provider, rule: Rule, offset: float, now: float
) -> tuple[ProviderWindow, list[tuple[float, FailureEvent]]] | None:
    """The provider's window in this clock's time under `rule`, or None when nothing in it still matters."""

    def mono(epoch: float) -> float:
        # A wall clock set back between the two processes must not put failures in the future.
        return min(epoch - offset, now)

    def maybe(epoch: float | None) -> float | None:
        return None if epoch is None else mono(epoch)

    cutoff = now - rule.window
    window = ProviderWindow(rule)
    window.recent.extend(at for at in map(mono, p.recent) if at >= cutoff)
    if math.isclose(p.bucket_seconds, window.bucket_seconds, rel_tol=1e-9):
        buckets = [(count, mono(first), mono(last)) for count, first, last in p.buckets]
        window.load_buckets([b for b in buckets if b[2] >= cutoff])
    else:
        # Another window length: count again from the arrival times kept, as a rule change does.
        window.load_buckets([(1, at, at) for at in window.recent])
    cooldowns = [None if since is None or now - mono(since) >= rule.cooldown else mono(since) for since in p.cooldowns]
    levels = len(rule.levels)
    if p.levels is not None:
        # By level, as a rule change does (a document saved under the same rule gets its cooldowns back as they were).
        cooldowns = carry_cooldowns(p.levels, cooldowns, [level for _, level in rule.levels])
    elif len(cooldowns) != levels:
        # A document without levels and another number of tiers: the latest cooldown for every tier.
        latest = max((since for since in cooldowns if since is not None), default=None)
        cooldowns = [latest] * levels
    window.cooldowns = cooldowns
    window.last_alert = maybe(p.last_alert)
    window.alert_tier = min(p.alert_tier, levels - 1)
    window.throttled_since_alert = p.throttled_since_alert
    window.failures_total, window.alerts_total, window.throttled_total = p.totals
    if p.episode is not None:
        started, alerts, throttled, failures, last_hit = p.episode
        window.episode_start = mono(started)
        window.episode_alerts, window.episode_throttled, window.episode_failures = alerts, throttled, failures
        window.last_hit = mono(last_hit)
    window.last_resolved = maybe(p.last_resolved)
    if window.is_idle(now):
        return None
    return window, [(mono(at), event) for at, event in p.samples]


def _provider(item: object, index: int) -> _Provider:
    where = f"providers[{index}]"
    data = _object(item, where)
    name = data.get("provider")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_PROVIDER_CHARS or not name.isprintable() or " " in name:
        raise StateError(f"{where}.provider must be a provider name")
    where = f"provider {name!r}"
    recent = [_epoch(at, f"{where}: recent") for at in _list(data.get("recent"), f"{where}: recent", MAX_TIMES)]
    _ascending(recent, f"{where}: recent")
    width = _number(data.get("bucket_seconds"), f"{where}: bucket_seconds")
    if not width > 0:
        raise StateError(f"{where}: bucket_seconds must be > 0")
    buckets = []
    for bucket in _list(data.get("buckets"), f"{where}: buckets", BUCKETS + 1):
        triple = _list(bucket, f"{where}: a bucket", 3)
        if len(triple) != 3:
            raise StateError(f"{where}: a bucket must be [count, first, last]")
        count = _count(triple[0], f"{where}: a bucket's count")
        first, last = _epoch(triple[1], f"{where}: a bucket's first"), _epoch(triple[2], f"{where}: a bucket's last")
        if count < 1 or first > last:
            raise StateError(f"{where}: a bucket needs a count >= 1 and first <= last")
        buckets.append((count, first, last))
    _ascending([b[2] for b in buckets], f"{where}: buckets")
    cooldowns = [
        _maybe_epoch(since, f"{where}: cooldowns")
        for since in _list(data.get("cooldowns"), f"{where}: cooldowns", MAX_TIMES)
    ]
    levels = data.get("levels")
    if levels is not None:
        levels = _list(levels, f"{where}: levels", MAX_TIMES)
        if len(levels) != len(cooldowns) or not all(
            isinstance(level, str) and 0 < len(level) <= MAX_LEVEL_CHARS for level in levels
        ):
            raise StateError(f"{where}: levels must be one level name per cooldown")
    totals = _object(data.get("totals"), f"{where}: totals")
    episode = data.get("episode")
    if episode is not None:
        e = _object(episode, f"{where}: episode")
        episode = (
            _epoch(e.get("started_at"), f"{where}: episode.started_at"),
            _count(e.get("alerts"), f"{where}: episode.alerts"),
            _count(e.get("throttled"), f"{where}: episode.throttled"),
            _count(e.get("failures"), f"{where}: episode.failures"),
            _epoch(e.get("last_hit"), f"{where}: episode.last_hit"),
        )
    samples = []
    for sample in _list(data.get("samples"), f"{where}: samples", RECENT_SAMPLES):
        s = _object(sample, f"{where}: a sample")
        samples.append((_epoch(s.get("at"), f"{where}: a sample's at"), _event(s.get("event"), where)))
    return _Provider(
        name=name,
        recent=recent,
        bucket_seconds=width,
        buckets=buckets,
        cooldowns=cooldowns,
        levels=levels,
        last_alert=_maybe_epoch(data.get("last_alert"), f"{where}: last_alert"),
        alert_tier=_count(data.get("alert_tier"), f"{where}: alert_tier"),
        throttled_since_alert=_count(data.get("throttled_since_alert"), f"{where}: throttled_since_alert"),
        totals=(
            _count(totals.get("failures"), f"{where}: totals.failures"),
            _count(totals.get("alerts"), f"{where}: totals.alerts"),
            _count(totals.get("throttled"), f"{where}: totals.throttled"),
        ),
        episode=episode,
        last_resolved=_maybe_epoch(data.get("last_resolved"), f"{where}: last_resolved"),
        samples=samples,
    )


def _event(value: object, where: str) -> FailureEvent:
    data = _object(value, f"{where}: a sample's event")
    fields: dict[str, Any] = {}
    for key, item in data.items():
        if key in _EVENT_STRINGS:
            if not isinstance(item, str) or len(item) > _EVENT_STRINGS[key]:
                raise StateError(f"{where}: a sample's {key} must be a string of at most {_EVENT_STRINGS[key]}")
        elif key == "status":
            if isinstance(item, bool) or not isinstance(item, int) or not 100 <= item <= 599:
                raise StateError(f"{where}: a sample's status must be an integer from 100 to 599")
        elif key == "timestamp":
            fields[key] = _number(item, f"{where}: a sample's timestamp")
            continue
        else:
            raise StateError(f"{where}: a sample's event has an unknown field {key[:40]!r}")
        fields[key] = item
    if not fields.get("provider"):
        raise StateError(f"{where}: a sample's event needs a provider")
    return FailureEvent(**fields)


def _silence(item: object, index: int) -> Silence:
    where = f"silences[{index}]"
    try:
        silence = Silence.from_json(item)
    except ValueError as exc:
        raise StateError(f"{where}: {exc}") from None
    limits = (
        (silence.id, MAX_SILENCE_ID_CHARS, "id"),
        (silence.providers, MAX_PROVIDERS_CHARS, "providers"),
        (silence.comment, MAX_COMMENT_CHARS, "comment"),
        (silence.created_by or "", MAX_CREATED_BY_CHARS, "created_by"),
    )
    for text, limit, name in limits:
        if len(text) > limit:
            raise StateError(f"{where}: {name} is longer than {limit} characters")
    return silence


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StateError(f"{where} must be a JSON object")
    return value


def _list(value: object, where: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise StateError(f"{where} must be a JSON array")
    if len(value) > limit:
        raise StateError(f"{where} holds {len(value)} items, more than {limit}")
    return value


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise StateError(f"{where} must be a finite number")
    return float(value)


def _epoch(value: object, where: str) -> float:
    number = _number(value, where)
    if not 0 <= number <= MAX_EPOCH:
        raise StateError(f"{where} must be epoch seconds (0 to {MAX_EPOCH:.0f})")
    return number


def _maybe_epoch(value: object, where: str) -> float | None:
    return None if value is None else _epoch(value, where)


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise StateError(f"{where} must be an integer from 0 to 2**53")
    return value


def _ascending(times: list[float], where: str) -> None:
    if any(later < earlier for earlier, later in itertools.pairwise(times)):
        raise StateError(f"{where} must be in ascending order")
