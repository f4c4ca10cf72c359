"""Cluster mode's side of `window.lua`: the script, its arguments per rule, and its replies.

The script decides (`d`) and resolves (`r`); see its header for the layout. Times in the replies are Redis
epoch seconds; `RedisTracker` converts them to this process's monotonic clock.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from alertd.window import Episode, Rule, carry_cooldowns

SCRIPT = importlib.resources.files("alertd").joinpath("window.lua").read_text(encoding="utf-8")
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()

# (0-based index of the alerting failure in the call, count in window, first failure, throttled since,
#  tier index, its episode's start, its rank in the episode)
Alerted = tuple[int, int, float, int, int, float, int]


def reply_text(value: Any) -> str:
    """A Redis reply value as text (redis-py gives bytes unless told to decode)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _stamp(value: Any) -> float | None:
    text = reply_text(value)
    return float(text) if text else None


def _episode(value: Any) -> Episode | None:
    if not isinstance(value, list):  # "" when none
        return None
    start, alerts, throttled, failures, last_hit = value
    return Episode(float(start), int(alerts), int(throttled), int(failures), float(last_hit))


@dataclass(frozen=True, slots=True)
class Decision:
    """What the script decided for one provider's failures in one call; times are Redis epoch seconds."""

    now: float
    throttled: int
    # The resolve deadline of the episode open after the call, or None.
    deadline: float | None
    # The episode resolved (at `now`) before the failures were weighed, or None.
    resolved: Episode | None
    alerts: tuple[Alerted, ...]

    @classmethod
    def parse(cls, reply: Sequence[Any]) -> Decision:
        """Read the script's reply for one provider."""
        groups = reply[4:]
        alerts = tuple(
            (
                int(groups[i]) - 1,
                int(groups[i + 1]),
                float(groups[i + 2]),
                int(groups[i + 3]),
                int(groups[i + 4]),
                float(groups[i + 5]),
                int(groups[i + 6]),
            )
            for i in range(0, len(groups), 7)
        )
        return cls(float(reply[0]), int(reply[1]), _stamp(reply[2]), _episode(reply[3]), alerts)


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a resolve call found for one provider; times are Redis epoch seconds."""

    now: float
    # The open episode's deadline when it is not reached yet; None when not firing after the call.
    deadline: float | None
    # The episode this call resolved (at `now`): this caller alone got it.
    episode: Episode | None

    @classmethod
    def parse(cls, reply: Sequence[Any]) -> Resolved:
        """Read the script's reply for one provider."""
        return cls(float(reply[0]), _stamp(reply[1]), _episode(reply[2]))


def signature(rule: Rule) -> str:
    """`window|L|digest|levels`: equal for equal rules in every process (sets sorted, no hash order).

    L is the number of tiers; levels are the tiers' levels, URL-quoted and joined by ",", so that the script
    can carry each tier's cooldown over by level when the signature changes (window.py's change_rule).
    """
    canonical = json.dumps(
        [
            rule.threshold,
            repr(rule.window),
            repr(rule.cooldown),
            None if rule.resolve_after is None else repr(rule.resolve_after),
            [list(tier) for tier in rule.tiers],
            None if rule.count_status is None else sorted(rule.count_status),
            sorted(rule.count_classes),
            sorted(rule.ignore_error_types),
        ]
    )
    digest = hashlib.sha1(canonical.encode(), usedforsecurity=False).hexdigest()[:16]
    levels = ",".join(urllib.parse.quote(level, safe="") for _, level in rule.levels)
    return f"{rule.window!r}|{len(rule.levels)}|{digest}|{levels}"


def stored_cooldowns(fields: Mapping[str, str], rule: Rule, sig: str) -> list[float | None]:
    """The cooldowns per tier of `rule` (signed `sig`) from a state hash holding `rl`: as the script carries them.

    Under another signature, by level (an older alertd's signature names no levels: the same rule keeps them
    by index, another one takes the latest for every tier), as the provider's next failure would see them.
    """
    stored_sig = fields["rl"]
    _, count, rest = stored_sig.split("|", 2)
    digest, bar, levels = rest.partition("|")
    stored = [float(fields[f"c{i}"]) if f"c{i}" in fields else None for i in range(1, int(count) + 1)]
    new_levels = [level for _, level in rule.levels]
    if bar:
        return carry_cooldowns([urllib.parse.unquote(level) for level in levels.split(",")], stored, new_levels)
    if digest == sig.split("|")[2]:
        return stored
    latest = max((since for since in stored if since is not None), default=None)
    return [latest] * len(new_levels)


def rule_args(rule: Rule) -> tuple[str | int, ...]:
    """The script's per-provider arguments after the failure count: window, cooldown, resolve, signature, tiers."""
    thresholds = [threshold for threshold, _ in rule.levels]
    return (
        repr(rule.window),
        repr(rule.cooldown),
        repr(rule.resolve_seconds),
        signature(rule),
        len(thresholds),
        *thresholds,
    )


def has_filters(rule: Rule) -> bool:
    """True when `rule` may leave some failures uncounted."""
    return rule.count_status is not None or bool(rule.count_classes) or bool(rule.ignore_error_types)
