"""The rules file (ALERTD_RULES_FILE): read it, parse its TOML, check every value, build the RuleSet. Stdlib only.

Every error is a `RulesError` naming the file, the line (best effort) and the key, e.g.
`rules.toml:14: rule[2].tiers[1].level: "critical" is not one of debug, info, warning, error, fatal`.
Indexes in key paths count from 1: `rule[1]` is the file's first `[[rule]]`. docs/RULES.md documents the format;
alertd/rules.py holds the model this builds.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from datetime import UTC, date, datetime, time
from typing import Any

from alertd.errors import RulesError
from alertd.rules import (
    LEVELS,
    MAX_SECONDS,
    MAX_THRESHOLD,
    MIN_WINDOW_SECONDS,
    DeclaredSilence,
    ProviderRule,
    RuleSet,
    Tier,
)
from alertd.timefmt import MAX_EPOCH

# A rules file is a few kilobytes; a bigger one is a mistake (or a device file), not rules.
MAX_FILE_BYTES = 1 << 20

_STATUS_CLASSES = {f"{n}xx": n for n in range(1, 6)}
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?")


def load_rules(path: str, env_defaults: ProviderRule, loaded_at: float) -> RuleSet:
    """Read and parse the rules file at PATH (following symlinks); raises RulesError."""
    return parse_rules_bytes(read_rules_file(path), path, env_defaults, loaded_at)


def read_rules_file(path: str) -> bytes:
    """The bytes of the rules file (following symlinks); raises RulesError when unreadable or too large."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise RulesError(path, None, f"cannot read the rules file: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise RulesError(path, None, f"the rules file is larger than {MAX_FILE_BYTES} bytes")
    return data


def parse_rules_bytes(data: bytes, path: str, env_defaults: ProviderRule, loaded_at: float) -> RuleSet:
    """`parse_rules` over the file's bytes, which must be UTF-8; raises RulesError."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RulesError(path, line, "the rules file is not UTF-8 text") from None
    return parse_rules(text, path, env_defaults, loaded_at)


def parse_rules(text: str, path: str, env_defaults: ProviderRule, loaded_at: float) -> RuleSet:
    """Parse a rules file's TEXT; PATH names it in errors. Missing defaults come from ENV_DEFAULTS.

    Raises RulesError with the line: tomllib's for a syntax error, the offending key's otherwise.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(exc, text, path) from None
    return _Parser(text, path, env_defaults).rule_set(document, loaded_at)


def _syntax_error(exc: tomllib.TOMLDecodeError, text: str, path: str) -> RulesError:
    message = str(exc)
    found = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if found:
        reason = message[: found.start()]
        return RulesError(path, int(found.group(1)), f"TOML syntax error at column {found.group(2)}: {reason}")
    found = re.search(r"\s*\(at end of document\)$", message)
    if found:
        line = text.count("\n") + (0 if text.endswith("\n") else 1)
        return RulesError(path, max(line, 1), f"TOML syntax error at the end of the file: {message[: found.start()]}")
    return RulesError(path, None, f"TOML syntax error: {message}")


# --- Errors name a key path: ("rule", 2, "tiers", 1, "level") is shown as rule[2].tiers[1].level -------------

_Key = tuple[str | int, ...]


def _name(key: _Key) -> str:
    shown = ""
    for part in key:
        if isinstance(part, int):
            shown += f"[{part}]"
        else:
            shown += f".{part}" if shown else part
    return shown


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    return repr(value)


class _Invalid(Exception):  # noqa: N818 - internal: becomes a RulesError once its line is found
    def __init__(self, key: _Key, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{_name(key)}: {reason}")


def _not(key: _Key, value: Any, accepted: str) -> _Invalid:
    return _Invalid(key, f"{_show(value)} is not {accepted}")


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\- ]+?)\s*\]\]?\s*(#.*)?$")


class _Locator:
    """Finds the line of a key path in the text; best effort (None when the layout is unusual)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        # (line number, is an array of tables, dotted name) of every table header.
        self.headers: list[tuple[int, bool, str]] = []
        for number, line in enumerate(self.lines, start=1):
            found = _HEADER.match(line)
            if found:
                name = ".".join(part.strip() for part in found.group(2).split("."))
                self.headers.append((number, found.group(1) == "[[", name))

    def line(self, key: _Key) -> int | None:  # noqa: PLR0911 - one return per layout
        if not key or not isinstance(key[0], str):
            return None
        section = key[0]
        if len(key) == 1:
            return self._header(section, None) or self._key_line(0, key[0])
        if section == "defaults":
            start = self._header("defaults", None)
            return None if start is None else self._key_line(start, key[1]) or start
        if section in ("rule", "silence") and isinstance(key[1], int):
            start = self._header(section, key[1])
            if start is None or len(key) == 2 or not isinstance(key[2], str):
                return start
            found = self._key_line(start, key[2])
            if key[2] == "tiers" and len(key) >= 4 and isinstance(key[3], int):
                return self._tier_line(start, found, key[3], key[4] if len(key) > 4 else None) or found or start
            return found or start
        return None

    def _header(self, name: str, index: int | None) -> int | None:
        """The line of `[name]`, or of the INDEX-th (from 1) `[[name]]`."""
        seen = 0
        for number, array, header in self.headers:
            if header == name and array == (index is not None):
                seen += 1
                if index is None or seen == index:
                    return number
        return None

    def _section_end(self, start: int) -> int:
        """The last line of the table whose header is on line START (up to the next header of another table)."""
        for number, _array, _name in self.headers:
            if number > start:
                return number - 1
        return len(self.lines)

    def _key_line(self, start: int, key: str | int) -> int | None:
        """The first line after START (a header, or 0 for the top) assigning KEY, within that table."""
        if not isinstance(key, str):
            return None
        pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        end = self._section_end(start) if start else (self.headers[0][0] - 1 if self.headers else len(self.lines))
        for number in range(start + 1, end + 1):
            if pattern.match(self.lines[number - 1]):
                return number
        return None

    def _tier_line(self, rule_start: int, tiers_line: int | None, index: int, key: str | int | None) -> int | None:
        """The line of the INDEX-th tier (or of its KEY): an inline table after `tiers =`, or `[[rule.tiers]]`."""
        if tiers_line is None:
            seen = 0
            for number, array, header in self.headers:
                if number > rule_start and array and header == "rule.tiers":
                    seen += 1
                    if seen == index:
                        return (self._key_line(number, key) if isinstance(key, str) else None) or number
                elif number > rule_start and header != "rule.tiers":
                    break
            return None
        # Inline tables: the INDEX-th "{" from the `tiers =` line on, then KEY after it.
        rest = "\n".join(self.lines[tiers_line - 1 :])
        offset = -1
        for _ in range(index):
            offset = rest.find("{", offset + 1)
            if offset < 0:
                return None
        if isinstance(key, str):
            found = re.compile(rf"[{{,\s]{re.escape(key)}\s*=").search(rest, offset)
            if found:
                offset = found.start() + 1
        return tiers_line + rest.count("\n", 0, offset)


# --- Values ---------------------------------------------------------------------------------------------------

_DEFAULT_KEYS = ("threshold", "window_seconds", "cooldown_seconds", "resolve_after_seconds")
_RULE_KEYS = ("providers", *_DEFAULT_KEYS, "count_status", "ignore_error_types", "tiers")
_SILENCE_KEYS = ("providers", "ends_at", "comment")
_TOP_KEYS = ("defaults", "rule", "silence")


def _table(key: _Key, value: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _not(key, value, "a table")
    for name in value:
        if name not in allowed:
            raise _Invalid((*key, name), f"unknown key (expected one of {', '.join(allowed)})")
    return value


def _array_of_tables(key: _Key, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise _Invalid(key, f"{_show(value)} is not an array of tables: write [[{key[-1]}]]")
    return value


def _threshold(key: _Key, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_THRESHOLD:
        raise _not(key, value, f"an integer from 1 to {MAX_THRESHOLD}")
    return value


def _seconds(key: _Key, value: Any, low: float, accepted: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not low <= value <= MAX_SECONDS
    ):
        raise _not(key, value, accepted)
    return float(value)


def _window(key: _Key, value: Any) -> float:
    return _seconds(key, value, MIN_WINDOW_SECONDS, "a number of seconds from 0.001 to 1e7")


def _cooldown(key: _Key, value: Any) -> float:
    return _seconds(key, value, 0.0, "a number of seconds from 0 to 1e7")


def _globs(key: _Key, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise _not(key, value, "a glob or a non-empty array of globs")
    for index, glob in enumerate(items, start=1):
        if not isinstance(glob, str) or not glob.strip():
            raise _not((*key, index), glob, 'a non-empty glob such as "openai" or "bedrock-*"')
    return tuple(items)


def _status(key: _Key, value: Any) -> tuple[frozenset[int], frozenset[int]]:
    if not isinstance(value, list) or not value:
        raise _not(key, value, 'a non-empty array of status codes and classes, e.g. [408, "5xx"]')
    codes: set[int] = set()
    classes: set[int] = set()
    for index, item in enumerate(value, start=1):
        if isinstance(item, str) and item.lower() in _STATUS_CLASSES:
            classes.add(_STATUS_CLASSES[item.lower()])
        elif isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599:
            codes.add(item)
        else:
            raise _not((*key, index), item, 'a status code from 100 to 599 or a class "1xx" to "5xx"')
    return frozenset(codes), frozenset(classes)


def _error_types(key: _Key, value: Any) -> frozenset[str]:
    if not isinstance(value, list):
        raise _not(key, value, 'an array of error types, e.g. ["client_cancelled"]')
    for index, item in enumerate(value, start=1):
        if not isinstance(item, str) or not item:
            raise _not((*key, index), item, "a non-empty string")
    return frozenset(value)


def _tiers(key: _Key, value: Any) -> tuple[Tier, ...]:
    if not isinstance(value, list) or not value:
        raise _not(key, value, "a non-empty array of tables {threshold = N, level = L}")
    tiers: list[Tier] = []
    for index, item in enumerate(value, start=1):
        where = (*key, index)
        table = _table(where, item, ("threshold", "level"))
        for name in ("threshold", "level"):
            if name not in table:
                raise _Invalid((*where, name), "missing")
        level = table["level"]
        if level not in LEVELS:
            raise _not((*where, "level"), level, f"one of {', '.join(LEVELS)}")
        tier = Tier(_threshold((*where, "threshold"), table["threshold"]), level)
        if any(t.threshold == tier.threshold for t in tiers):
            raise _Invalid((*where, "threshold"), f"{tier.threshold} is the threshold of another tier already")
        tiers.append(tier)
    return tuple(sorted(tiers, key=lambda t: t.threshold))


def _ends_at(key: _Key, value: Any) -> float:
    accepted = "an RFC 3339 date-time such as 2026-11-27T18:00:00Z"
    moment: datetime
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and _RFC3339.fullmatch(value.strip()):
        try:
            moment = datetime.fromisoformat(value.strip().upper().replace("Z", "+00:00"))
        except ValueError:
            raise _not(key, value, accepted) from None
    else:  # a TOML local date or time, a malformed string, another type
        raise _not(key, value, accepted)
    if moment.tzinfo is None:  # a local date-time: UTC, not the pod's time zone
        moment = moment.replace(tzinfo=UTC)
    epoch = moment.timestamp()
    if not 0 <= epoch <= MAX_EPOCH:
        raise _not(key, value, "a date-time from 1970 to the end of year 9999 UTC")
    return epoch


class _Parser:
    def __init__(self, text: str, path: str, env_defaults: ProviderRule) -> None:
        self.text = text
        self.path = path
        self.env = env_defaults

    def rule_set(self, document: dict[str, Any], loaded_at: float) -> RuleSet:
        try:
            _table((), document, _TOP_KEYS)
            defaults, follow = self._defaults(document.get("defaults", {}))
            rules = tuple(
                self._rule(index, item, defaults, follow=follow)
                for index, item in enumerate(_array_of_tables(("rule",), document.get("rule", [])), start=1)
            )
            silences = tuple(
                self._silence(index, item)
                for index, item in enumerate(_array_of_tables(("silence",), document.get("silence", [])), start=1)
            )
        except _Invalid as exc:
            raise RulesError(self.path, _Locator(self.text).line(exc.key), str(exc)) from None
        return RuleSet(self.path, loaded_at, defaults, rules, silences)

    def _defaults(self, value: Any) -> tuple[ProviderRule, bool]:
        """The file's defaults over the environment's, and whether resolve_after follows each rule's window."""
        table = _table(("defaults",), value, _DEFAULT_KEYS)
        env = self.env
        # The environment's resolve_after follows the window unless it was set to something else.
        follow = env.resolve_after_seconds == env.window_seconds
        window = _window(("defaults", "window_seconds"), table.get("window_seconds", env.window_seconds))
        resolve = env.resolve_after_seconds
        if "resolve_after_seconds" in table:
            resolve = _window(("defaults", "resolve_after_seconds"), table["resolve_after_seconds"])
            follow = False
        elif follow:
            resolve = window
        rule = ProviderRule(
            ("*",),
            _threshold(("defaults", "threshold"), table.get("threshold", env.threshold)),
            window,
            _cooldown(("defaults", "cooldown_seconds"), table.get("cooldown_seconds", env.cooldown_seconds)),
            resolve,
        )
        return rule, follow

    def _rule(self, index: int, value: Any, defaults: ProviderRule, *, follow: bool) -> ProviderRule:
        key: _Key = ("rule", index)
        table = _table(key, value, _RULE_KEYS)
        if "providers" not in table:
            raise _Invalid((*key, "providers"), "missing (a glob or an array of globs)")
        providers = _globs((*key, "providers"), table["providers"])
        window = defaults.window_seconds
        if "window_seconds" in table:
            window = _window((*key, "window_seconds"), table["window_seconds"])
        resolve = window if follow else defaults.resolve_after_seconds
        if "resolve_after_seconds" in table:
            resolve = _window((*key, "resolve_after_seconds"), table["resolve_after_seconds"])
        cooldown = defaults.cooldown_seconds
        if "cooldown_seconds" in table:
            cooldown = _cooldown((*key, "cooldown_seconds"), table["cooldown_seconds"])
        threshold = defaults.threshold
        if "threshold" in table:
            threshold = _threshold((*key, "threshold"), table["threshold"])
        tiers: tuple[Tier, ...] = ()
        if "tiers" in table:
            if "threshold" in table:
                raise _Invalid((*key, "threshold"), "give either threshold or tiers, not both (tiers replace it)")
            tiers = _tiers((*key, "tiers"), table["tiers"])
            threshold = tiers[0].threshold
        count_status: frozenset[int] | None = None
        count_classes: frozenset[int] = frozenset()
        if "count_status" in table:
            count_status, count_classes = _status((*key, "count_status"), table["count_status"])
        ignored: frozenset[str] = frozenset()
        if "ignore_error_types" in table:
            ignored = _error_types((*key, "ignore_error_types"), table["ignore_error_types"])
        return ProviderRule(
            providers, threshold, window, cooldown, resolve, count_status, count_classes, ignored, tiers
        )

    def _silence(self, index: int, value: Any) -> DeclaredSilence:
        key: _Key = ("silence", index)
        table = _table(key, value, _SILENCE_KEYS)
        for name in _SILENCE_KEYS:
            if name not in table:
                raise _Invalid((*key, name), "missing")
        comment = table["comment"]
        if not isinstance(comment, str) or not comment.strip():
            raise _not((*key, "comment"), comment, "a non-empty string saying why")
        return DeclaredSilence(
            _globs((*key, "providers"), table["providers"]), _ends_at((*key, "ends_at"), table["ends_at"]), comment
        )
