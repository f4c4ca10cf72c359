"""The rules model: the rule each provider is judged by, the declared silences, the RuleSet in force. Stdlib only.

A `RuleSet` is immutable: a reload builds a new one. `RuleSet.rule_for` finds a provider's rule (the first
`[[rule]]` whose globs match, else the defaults); `ProviderRule.ignores` says whether a failure counts.
A RuleSet comes from the rules file (ALERTD_RULES_FILE, read and checked by alertd/rules_file.py) or, without
one, from the environment (`rules_from_environment`). docs/RULES.md documents the format.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from alertd.timefmt import iso as rfc3339
from alertd.window import DEFAULT_LEVEL, Rule

LEVELS = ("debug", "info", "warning", "error", "fatal")  # Sentry levels
MAX_THRESHOLD = 10_000
# The same bounds as alertd/config.py puts on ALERTD_WINDOW/COOLDOWN/RESOLVE_AFTER_SECONDS.
MAX_SECONDS = 1e7
MIN_WINDOW_SECONDS = 0.001
# rule_for remembers this many providers per RuleSet, then starts over.
RULE_CACHE_SIZE = 100_000


@dataclass(frozen=True, slots=True)
class Tier:
    """An escalation tier: THRESHOLD failures within the rule's window fire an event at LEVEL."""

    threshold: int
    level: str

    def to_json(self) -> dict[str, Any]:
        """`{"threshold": …, "level": …}`."""
        return {"threshold": self.threshold, "level": self.level}


@dataclass(frozen=True, slots=True)
class ProviderRule:
    """How the providers matching PROVIDERS are judged."""

    providers: tuple[str, ...]  # globs (fnmatch.fnmatchcase); ("*",) for the defaults
    threshold: int  # with tiers: the lowest tier's threshold
    window_seconds: float
    cooldown_seconds: float
    resolve_after_seconds: float  # default: window_seconds
    count_status: frozenset[int] | None = None  # exact codes that count; None = every status counts
    count_classes: frozenset[int] = frozenset()  # status classes that count, e.g. {5} for "5xx"
    ignore_error_types: frozenset[str] = frozenset()
    tiers: tuple[Tier, ...] = ()  # ascending threshold; () = one implicit tier (threshold, "error")

    def ignores(self, status: int | None, error_type: str | None) -> str | None:
        """Why a failure does not count: "error_type", "status", or None when it counts (see `Rule.ignores`)."""
        return self.to_rule().ignores(status, error_type)

    def to_rule(self) -> Rule:
        """The detection rule the pure core applies."""
        return Rule(
            threshold=self.threshold,
            window=self.window_seconds,
            cooldown=self.cooldown_seconds,
            resolve_after=self.resolve_after_seconds,
            tiers=tuple((tier.threshold, tier.level) for tier in self.tiers),
            count_status=self.count_status,
            count_classes=self.count_classes,
            ignore_error_types=self.ignore_error_types,
        )

    @property
    def effective_tiers(self) -> tuple[Tier, ...]:
        """The tiers, ascending; without explicit tiers, the one implicit tier (threshold, "error")."""
        return self.tiers or (Tier(self.threshold, DEFAULT_LEVEL),)

    @property
    def max_threshold(self) -> int:
        """The highest tier's threshold: how many failure times a provider under this rule needs to keep."""
        return self.tiers[-1].threshold if self.tiers else self.threshold

    def matches(self, provider: str) -> bool:
        """True when one of the globs matches the provider (case-sensitive)."""
        return any(fnmatch.fnmatchcase(provider, glob) for glob in self.providers)

    def to_json(self) -> dict[str, Any]:
        """The effective values, as GET /v1/rules shows them."""
        shown: dict[str, Any] = {"providers": list(self.providers)}
        if self.tiers:
            shown["tiers"] = [tier.to_json() for tier in self.tiers]
        else:
            shown["threshold"] = self.threshold
        status: list[int | str] | None = None
        if self.count_status is not None:
            status = [*sorted(self.count_status), *(f"{n}xx" for n in sorted(self.count_classes))]
        shown.update(
            window_seconds=self.window_seconds,
            cooldown_seconds=self.cooldown_seconds,
            resolve_after_seconds=self.resolve_after_seconds,
            count_status=status,
            ignore_error_types=sorted(self.ignore_error_types),
        )
        return shown


@dataclass(frozen=True, slots=True)
class DeclaredSilence:
    """A `[[silence]]` from the rules file: no notifications for the matching providers until ENDS_AT."""

    providers: tuple[str, ...]  # globs
    ends_at: float  # epoch seconds
    comment: str

    def covers(self, provider: str, now_epoch: float) -> bool:
        """True while the silence lasts (now < ends_at) and one of its globs matches the provider."""
        return now_epoch < self.ends_at and any(fnmatch.fnmatchcase(provider, glob) for glob in self.providers)

    def to_json(self) -> dict[str, Any]:
        """`{"providers": […], "ends_at": <RFC 3339>, "comment": …}`."""
        return {"providers": list(self.providers), "ends_at": rfc3339(self.ends_at), "comment": self.comment}


@dataclass(frozen=True)
class RuleSet:
    """Every rule in force: where they came from, the defaults, the `[[rule]]`s in order, the `[[silence]]`s."""

    source: str  # the file path, or "environment"
    loaded_at: float  # epoch seconds
    defaults: ProviderRule
    rules: tuple[ProviderRule, ...] = ()
    silences: tuple[DeclaredSilence, ...] = ()
    _cache: dict[str, ProviderRule] = field(default_factory=dict, init=False, repr=False, compare=False)
    _core: dict[ProviderRule, Rule] = field(default_factory=dict, init=False, repr=False, compare=False)

    def rule_for(self, provider: str) -> ProviderRule:
        """The first `[[rule]]` whose globs match the provider, else the defaults; remembered per provider."""
        found = self._cache.get(provider)
        if found is None:
            found = next((rule for rule in self.rules if rule.matches(provider)), self.defaults)
            if len(self._cache) >= RULE_CACHE_SIZE:
                self._cache.clear()
            self._cache[provider] = found
        return found

    def core_rule_for(self, provider: str) -> Rule:
        """`rule_for(provider)` as the pure core's Rule; one Rule object per ProviderRule, so `is` compares them."""
        rule = self.rule_for(provider)
        core = self._core.get(rule)
        if core is None:
            core = self._core[rule] = rule.to_rule()
        return core

    def silence_for(self, provider: str, now_epoch: float) -> DeclaredSilence | None:
        """The first declared silence covering the provider now, or None."""
        return next((s for s in self.silences if s.covers(provider, now_epoch)), None)

    def to_json(self) -> dict[str, Any]:
        """The answer of GET /v1/rules."""
        return {
            "source": self.source,
            "loaded_at": rfc3339(self.loaded_at),
            "defaults": self.defaults.to_json(),
            "rules": [rule.to_json() for rule in self.rules],
            "silences": [silence.to_json() for silence in self.silences],
        }


def rules_from_environment(
    threshold: int, window_seconds: float, cooldown_seconds: float, resolve_after_seconds: float, loaded_at: float
) -> RuleSet:
    """The v1 behaviour: ALERTD_THRESHOLD/WINDOW/COOLDOWN/RESOLVE_AFTER as the one rule for every provider."""
    defaults = ProviderRule(("*",), threshold, window_seconds, cooldown_seconds, resolve_after_seconds)
    return RuleSet("environment", loaded_at, defaults)
