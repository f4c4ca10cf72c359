"""The rules file: parsing, matching, filters, tiers, silences, errors with their lines, the JSON shapes."""

from __future__ import annotations

import fnmatch
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alertd.errors import RulesError
from alertd.rules import (
    LEVELS,
    MAX_THRESHOLD,
    RULE_CACHE_SIZE,
    DeclaredSilence,
    ProviderRule,
    RuleSet,
    Tier,
    rules_from_environment,
)
from alertd.rules_file import load_rules, parse_rules

ROOT = Path(__file__).resolve().parent.parent
ENV = rules_from_environment(5, 300.0, 60.0, 300.0, loaded_at=0.0).defaults
LOADED_AT = datetime(2026, 11, 27, 10, 0, tzinfo=UTC).timestamp()


def parse(text: str, env: ProviderRule = ENV) -> RuleSet:
    return parse_rules(text, "rules.toml", env, LOADED_AT)


def error(text: str) -> RulesError:
    with pytest.raises(RulesError) as caught:
        parse(text)
    return caught.value


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# --- the environment's rule ------------------------------------------------------------------------------------


def test_environment_rule_set_is_one_rule_for_every_provider() -> None:
    rules = rules_from_environment(7, 120.0, 30.0, 90.0, loaded_at=LOADED_AT)
    assert rules.source == "environment"
    assert rules.rules == ()
    assert rules.silences == ()
    rule = rules.rule_for("anything")
    assert rule is rules.defaults
    assert rule == ProviderRule(("*",), 7, 120.0, 30.0, 90.0)
    assert rule.ignores(429, "client_cancelled") is None
    assert rule.effective_tiers == (Tier(7, "error"),)
    assert rule.max_threshold == 7


def test_empty_file_is_the_environment_under_the_file_name() -> None:
    rules = parse("")
    assert rules.source == "rules.toml"
    assert rules.loaded_at == LOADED_AT
    assert rules.defaults == ENV
    assert rules.rules == ()


# --- defaults and precedence -------------------------------------------------------------------------------------


def test_file_defaults_win_over_the_environment_and_missing_keys_fall_back() -> None:
    env = rules_from_environment(5, 300.0, 60.0, 45.0, loaded_at=0.0).defaults
    rules = parse("[defaults]\nthreshold = 8\nwindow_seconds = 120\n", env)
    assert rules.defaults == ProviderRule(("*",), 8, 120.0, 60.0, 45.0)
    assert isinstance(rules.defaults.window_seconds, float)
    rules = parse("[defaults]\ncooldown_seconds = 0\nresolve_after_seconds = 30.5\n", env)
    assert rules.defaults == ProviderRule(("*",), 5, 300.0, 0.0, 30.5)


def test_resolve_after_follows_the_window_unless_set() -> None:
    # The environment's resolve_after equals its window: it follows each rule's window.
    rules = parse("[defaults]\nwindow_seconds = 120\n[[rule]]\nproviders = 'a'\nwindow_seconds = 10\n")
    assert rules.defaults.resolve_after_seconds == 120.0
    assert rules.rules[0].resolve_after_seconds == 10.0
    # Set in [defaults]: every rule inherits it.
    rules = parse("[defaults]\nresolve_after_seconds = 99\n[[rule]]\nproviders = 'a'\nwindow_seconds = 10\n")
    assert rules.rules[0].resolve_after_seconds == 99.0
    # Set in the rule: the rule's own.
    rules = parse("[[rule]]\nproviders = 'a'\nwindow_seconds = 10\nresolve_after_seconds = 7\n")
    assert rules.rules[0].resolve_after_seconds == 7.0
    # Set in the environment to something other than the window: inherited.
    env = rules_from_environment(5, 300.0, 60.0, 45.0, loaded_at=0.0).defaults
    rules = parse("[[rule]]\nproviders = 'a'\nwindow_seconds = 10\n", env)
    assert rules.rules[0].resolve_after_seconds == 45.0


def test_rule_inherits_the_file_defaults_and_overrides_each_key() -> None:
    rules = parse(
        """
[defaults]
threshold = 9
window_seconds = 100
cooldown_seconds = 10

[[rule]]
providers = "inherits"

[[rule]]
providers = "overrides"
threshold = 3
window_seconds = 600
cooldown_seconds = 0
resolve_after_seconds = 900
"""
    )
    assert rules.rules[0] == ProviderRule(("inherits",), 9, 100.0, 10.0, 100.0)
    assert rules.rules[1] == ProviderRule(("overrides",), 3, 600.0, 0.0, 900.0)


# --- matching ----------------------------------------------------------------------------------------------------


MATCHING = """
[[rule]]
providers = "openai"
threshold = 20

[[rule]]
providers = ["bedrock-*", "vertex-?"]
threshold = 7

[[rule]]
providers = "*ai"
threshold = 3

[[rule]]
providers = "[xy]-model"
threshold = 4
"""


def test_first_matching_rule_wins_and_globs_match_case_sensitively() -> None:
    rules = parse(MATCHING)
    assert rules.rule_for("openai").threshold == 20  # also matches "*ai", but the first match wins
    assert rules.rule_for("mistralai").threshold == 3
    assert rules.rule_for("bedrock-eu").threshold == 7
    assert rules.rule_for("bedrock-").threshold == 7
    assert rules.rule_for("vertex-1").threshold == 7
    assert rules.rule_for("vertex-12") is rules.defaults
    assert rules.rule_for("x-model").threshold == 4
    assert rules.rule_for("z-model") is rules.defaults
    assert rules.rule_for("OpenAI") is rules.defaults  # case-sensitive
    assert rules.rule_for("OPENAI") is rules.defaults
    assert rules.rule_for("") is rules.defaults


def test_rule_for_memo_is_bounded_and_stays_right(monkeypatch: pytest.MonkeyPatch) -> None:
    rules = parse(MATCHING)
    monkeypatch.setattr("alertd.rules.RULE_CACHE_SIZE", 10)
    for n in range(25):
        assert rules.rule_for(f"p{n}") is rules.defaults
        assert len(rules._cache) <= 10
    assert rules.rule_for("openai").threshold == 20
    assert RULE_CACHE_SIZE == 100_000


def brute_force(rules: RuleSet, provider: str) -> ProviderRule:
    for rule in rules.rules:
        for glob in rule.providers:
            if re.fullmatch(fnmatch.translate(glob), provider):
                return rule
    return rules.defaults


names = st.text(alphabet="abAB-*?", min_size=0, max_size=5)


@given(
    globs=st.lists(st.lists(names.filter(lambda s: s.strip() != ""), min_size=1, max_size=3), max_size=5),
    providers=st.lists(st.text(alphabet="abAB-", max_size=5), min_size=1, max_size=20),
)
def test_rule_for_is_the_first_match(globs: list[list[str]], providers: list[str]) -> None:
    rules = RuleSet(
        "hypothesis",
        0.0,
        ENV,
        tuple(ProviderRule(tuple(g), n + 1, 1.0, 1.0, 1.0) for n, g in enumerate(globs)),
    )
    for provider in providers * 2:  # the second round comes from the memo
        assert rules.rule_for(provider) is brute_force(rules, provider)


# --- what counts ----------------------------------------------------------------------------------------------------


def test_count_status_codes_and_classes() -> None:
    rule = parse('[[rule]]\nproviders = "*"\ncount_status = [408, "5xx", 429, "4XX"]\n').rules[0]
    assert rule.count_status == frozenset({408, 429})
    assert rule.count_classes == frozenset({5, 4})
    assert rule.ignores(500, None) is None
    assert rule.ignores(404, None) is None
    rule = parse('[[rule]]\nproviders = "*"\ncount_status = [408, "5xx"]\n').rules[0]
    assert rule.count_status == frozenset({408})
    assert rule.count_classes == frozenset({5})
    assert rule.ignores(408, None) is None
    assert rule.ignores(500, None) is None
    assert rule.ignores(599, None) is None
    assert rule.ignores(429, None) == "status"
    assert rule.ignores(404, None) == "status"
    assert rule.ignores(200, None) == "status"
    assert rule.ignores(None, None) is None  # no status: always counts
    assert rule.ignores(None, "timeout") is None


def test_only_classes_or_only_codes() -> None:
    rule = parse('[[rule]]\nproviders = "*"\ncount_status = ["5xx"]\n').rules[0]
    assert rule.count_status == frozenset()
    assert rule.ignores(503, None) is None
    assert rule.ignores(408, None) == "status"
    rule = parse('[[rule]]\nproviders = "*"\ncount_status = [503]\n').rules[0]
    assert rule.ignores(503, None) is None
    assert rule.ignores(500, None) == "status"


def test_ignore_error_types_applies_whatever_the_status() -> None:
    rule = parse(
        '[[rule]]\nproviders = "*"\ncount_status = ["5xx"]\nignore_error_types = ["client_cancelled", "x"]\n'
    ).rules[0]
    assert rule.ignore_error_types == frozenset({"client_cancelled", "x"})
    assert rule.ignores(503, "client_cancelled") == "error_type"
    assert rule.ignores(None, "client_cancelled") == "error_type"
    assert rule.ignores(429, "client_cancelled") == "error_type"
    assert rule.ignores(429, "timeout") == "status"
    assert rule.ignores(503, "timeout") is None
    # Without count_status, every status counts; only the error types are filtered.
    rule = parse('[[rule]]\nproviders = "*"\nignore_error_types = ["client_cancelled"]\n').rules[0]
    assert rule.count_status is None
    assert rule.ignores(429, None) is None
    assert rule.ignores(200, "client_cancelled") == "error_type"


# --- tiers ---------------------------------------------------------------------------------------------------------


def test_tiers_are_sorted_and_replace_the_threshold() -> None:
    rule = parse(
        """
[defaults]
threshold = 2
[[rule]]
providers = "openai"
tiers = [
  {threshold = 500, level = "fatal"},
  {threshold = 5, level = "warning"},
  {threshold = 50, level = "error"},
]
"""
    ).rules[0]
    assert rule.tiers == (Tier(5, "warning"), Tier(50, "error"), Tier(500, "fatal"))
    assert rule.threshold == 5
    assert rule.effective_tiers == rule.tiers
    assert rule.max_threshold == 500


def test_tiers_as_an_array_of_tables() -> None:
    rule = parse(
        '[[rule]]\nproviders = "a"\n[[rule.tiers]]\nthreshold = 3\nlevel = "info"\n'
        '[[rule.tiers]]\nthreshold = 1\nlevel = "debug"\n'
    ).rules[0]
    assert rule.tiers == (Tier(1, "debug"), Tier(3, "info"))


def test_every_sentry_level_is_accepted() -> None:
    tiers = ", ".join(f'{{threshold = {n + 1}, level = "{level}"}}' for n, level in enumerate(LEVELS))
    rule = parse(f'[[rule]]\nproviders = "a"\ntiers = [{tiers}]\n').rules[0]
    assert [t.level for t in rule.tiers] == list(LEVELS)


# --- silences ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2026-12-01T06:00:00Z", "2026-12-01T06:00:00+00:00"),
        ('"2026-12-01T06:00:00Z"', "2026-12-01T06:00:00+00:00"),
        ('"2026-12-01t06:00:00z"', "2026-12-01T06:00:00+00:00"),
        ("2026-12-01T08:00:00+02:00", "2026-12-01T06:00:00+00:00"),
        ('"2026-12-01T08:00:00.250+02:00"', "2026-12-01T06:00:00.250+00:00"),
        ('"2026-12-01 06:00:00Z"', "2026-12-01T06:00:00+00:00"),
        ("2026-12-01T06:00:00", "2026-12-01T06:00:00+00:00"),  # a TOML local date-time: UTC
        ('"2026-12-01T06:00:00"', "2026-12-01T06:00:00+00:00"),  # no offset: UTC
    ],
)
def test_silence_ends_at_forms(written: str, expected: str) -> None:
    rules = parse(f'[[silence]]\nproviders = "bedrock-*"\nends_at = {written}\ncomment = "maintenance"\n')
    assert rules.silences == (DeclaredSilence(("bedrock-*",), epoch(expected), "maintenance"),)


def test_silence_covers_matching_providers_until_it_ends() -> None:
    rules = parse(
        '[[silence]]\nproviders = ["bedrock-*", "cohere"]\nends_at = 2026-12-01T06:00:00Z\ncomment = "m"\n'
        '[[silence]]\nproviders = "*"\nends_at = 2026-11-01T00:00:00Z\ncomment = "over"\n'
    )
    silence = rules.silences[0]
    ends = epoch("2026-12-01T06:00:00+00:00")
    assert silence.covers("bedrock-eu", ends - 1)
    assert silence.covers("cohere", ends - 1)
    assert not silence.covers("bedrock-eu", ends)
    assert not silence.covers("openai", ends - 1)
    assert rules.silence_for("cohere", LOADED_AT) is silence
    assert rules.silence_for("openai", LOADED_AT) is None  # the catch-all one has ended
    assert rules.silence_for("openai", epoch("2026-10-01T00:00:00+00:00")) is rules.silences[1]


# --- errors, with their lines -------------------------------------------------------------------------------------


def test_error_format() -> None:
    assert str(RulesError("/etc/alertd/rules.toml", 3, "x: bad")) == "/etc/alertd/rules.toml:3: x: bad"
    assert str(RulesError("/etc/alertd/rules.toml", None, "x: bad")) == "/etc/alertd/rules.toml: x: bad"
    err = RulesError("p", 1, "r")
    assert (err.path, err.line, err.reason) == ("p", 1, "r")


def test_toml_syntax_error_has_tomllib_line() -> None:
    err = error('[defaults]\nthreshold = 5\nwindow_seconds = \n[[rule]]\nproviders = "a"\n')
    assert err.line == 3
    assert err.reason.startswith("TOML syntax error at column 18: Invalid value")
    assert str(err).startswith("rules.toml:3: TOML syntax error")
    err = error('[[rule]]\nproviders = ["a",\n')
    assert err.line == 2
    assert "end of the file" in err.reason


TIERS_FILE = """# comment
[defaults]
threshold = 5

[[rule]]
providers = "a"

[[rule]]
providers = "b"
tiers = [
  {threshold = 5, level = "warning"},
  {threshold = 50, level = "critical"},
]
"""


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (
            TIERS_FILE,
            12,
            'rule[2].tiers[2].level: "critical" is not one of debug, info, warning, error, fatal',
        ),
        (
            TIERS_FILE.replace("threshold = 5\n\n", "threshold = 10001\n\n"),
            3,
            "defaults.threshold: 10001 is not an integer from 1 to 10000",
        ),
        (
            TIERS_FILE.replace('providers = "a"', 'providers = "a"\nthreshold = 20000'),
            7,
            "rule[1].threshold: 20000 is not an integer from 1 to 10000",
        ),
        (
            TIERS_FILE.replace('{threshold = 50, level = "critical"}', '{threshold = 50000, level = "error"}'),
            12,
            "rule[2].tiers[2].threshold: 50000 is not an integer from 1 to 10000",
        ),
        (
            TIERS_FILE.replace('{threshold = 50, level = "critical"}', '{threshold = 5, level = "error"}'),
            12,
            "rule[2].tiers[2].threshold: 5 is the threshold of another tier already",
        ),
        (
            TIERS_FILE.replace('{threshold = 50, level = "critical"}', '{level = "error"}'),
            12,
            "rule[2].tiers[2].threshold: missing",
        ),
        (
            TIERS_FILE.replace('level = "critical"', 'level = "error", colour = "red"'),
            12,
            "rule[2].tiers[2].colour: unknown key (expected one of threshold, level)",
        ),
        (
            TIERS_FILE.replace('providers = "b"', 'providers = "b"\nthreshold = 4'),
            10,
            "rule[2].threshold: give either threshold or tiers, not both (tiers replace it)",
        ),
        (
            TIERS_FILE.replace('providers = "b"', 'providers = "b"\ntiers_ = 1'),
            10,
            "rule[2].tiers_: unknown key (expected one of providers, threshold, window_seconds, cooldown_seconds,"
            " resolve_after_seconds, count_status, ignore_error_types, tiers)",
        ),
        (
            TIERS_FILE.replace('providers = "b"\n', ""),
            8,
            "rule[2].providers: missing (a glob or an array of globs)",
        ),
        (
            TIERS_FILE.replace('providers = "a"', 'providers = ""'),
            6,
            'rule[1].providers[1]: "" is not a non-empty glob such as "openai" or "bedrock-*"',
        ),
        (
            TIERS_FILE.replace('providers = "a"', 'providers = ["a", 3]'),
            6,
            'rule[1].providers[2]: 3 is not a non-empty glob such as "openai" or "bedrock-*"',
        ),
        (
            TIERS_FILE.replace('providers = "a"', "providers = []"),
            6,
            "rule[1].providers: an array is not a glob or a non-empty array of globs",
        ),
        (
            TIERS_FILE.replace("threshold = 5\n\n", "threshold = 5\ncolour = 1\n\n"),
            4,
            "defaults.colour: unknown key (expected one of threshold, window_seconds, cooldown_seconds,"
            " resolve_after_seconds)",
        ),
        (
            TIERS_FILE.replace("threshold = 5\n\n", 'threshold = "5"\n\n'),
            3,
            'defaults.threshold: "5" is not an integer from 1 to 10000',
        ),
        (
            TIERS_FILE.replace("threshold = 5\n\n", "threshold = true\n\n"),
            3,
            "defaults.threshold: true is not an integer from 1 to 10000",
        ),
        (
            TIERS_FILE.replace("threshold = 5\n\n", "threshold = 5.0\n\n"),
            3,
            "defaults.threshold: 5.0 is not an integer from 1 to 10000",
        ),
        (
            TIERS_FILE.replace("threshold = 5\n\n", "threshold = 0\n\n"),
            3,
            "defaults.threshold: 0 is not an integer from 1 to 10000",
        ),
        (
            TIERS_FILE.replace("threshold = 5\n\n", "threshold = 5\nwindow_seconds = 0\n\n"),
            4,
            "defaults.window_seconds: 0 is not a number of seconds from 0.001 to 1e7",
        ),
        (
            TIERS_FILE.replace("threshold = 5\n\n", "threshold = 5\nwindow_seconds = inf\n\n"),
            4,
            "defaults.window_seconds: inf is not a number of seconds from 0.001 to 1e7",
        ),
        (
            TIERS_FILE.replace('providers = "a"', 'providers = "a"\nwindow_seconds = nan'),
            7,
            "rule[1].window_seconds: nan is not a number of seconds from 0.001 to 1e7",
        ),
        (
            TIERS_FILE.replace('providers = "a"', 'providers = "a"\ncooldown_seconds = -1'),
            7,
            "rule[1].cooldown_seconds: -1 is not a number of seconds from 0 to 1e7",
        ),
        (
            TIERS_FILE.replace('providers = "a"', 'providers = "a"\nresolve_after_seconds = 1e8'),
            7,
            "rule[1].resolve_after_seconds: 100000000.0 is not a number of seconds from 0.001 to 1e7",
        ),
        (
            TIERS_FILE.replace('providers = "a"', 'providers = "a"\n\ncount_status = [408, "6xx"]'),
            8,
            'rule[1].count_status[2]: "6xx" is not a status code from 100 to 599 or a class "1xx" to "5xx"',
        ),
        (
            TIERS_FILE.replace('providers = "a"', 'providers = "a"\ncount_status = [600]'),
            7,
            'rule[1].count_status[1]: 600 is not a status code from 100 to 599 or a class "1xx" to "5xx"',
        ),
        (
            TIERS_FILE.replace('providers = "a"', 'providers = "a"\ncount_status = []'),
            7,
            'rule[1].count_status: an array is not a non-empty array of status codes and classes, e.g. [408, "5xx"]',
        ),
        (
            TIERS_FILE.replace('providers = "a"', 'providers = "a"\ncount_status = "5xx"'),
            7,
            'rule[1].count_status: "5xx" is not a non-empty array of status codes and classes, e.g. [408, "5xx"]',
        ),
        (
            TIERS_FILE.replace('providers = "a"', 'providers = "a"\nignore_error_types = "client_cancelled"'),
            7,
            'rule[1].ignore_error_types: "client_cancelled" is not an array of error types, e.g. ["client_cancelled"]',
        ),
        (
            TIERS_FILE.replace('providers = "a"', 'providers = "a"\nignore_error_types = [""]'),
            7,
            'rule[1].ignore_error_types[1]: "" is not a non-empty string',
        ),
        (
            TIERS_FILE.replace("tiers = [\n", "tiers = [\n  {threshold = 1, level = 2},\n"),
            11,
            "rule[2].tiers[1].level: 2 is not one of debug, info, warning, error, fatal",
        ),
        (
            TIERS_FILE.replace('tiers = [\n  {threshold = 5, level = "warning"},\n', "tiers = [\n"),
            11,
            'rule[2].tiers[1].level: "critical" is not one of debug, info, warning, error, fatal',
        ),
        (
            TIERS_FILE.replace('tiers = [\n  {threshold = 5, level = "warning"},\n', "tiers = [\n").replace(
                '{threshold = 50, level = "critical"},\n', ""
            ),
            10,
            "rule[2].tiers: an array is not a non-empty array of tables {threshold = N, level = L}",
        ),
        ("x = 1\n[defaults]\n", 1, "x: unknown key (expected one of defaults, rule, silence)"),
        ("[defaults]\n[rules]\nproviders = 'a'\n", 2, "rules: unknown key (expected one of defaults, rule, silence)"),
        ("\n[rule]\nproviders = 'a'\n", 2, "rule: a table is not an array of tables: write [[rule]]"),
        ("defaults = 3\n", 1, "defaults: 3 is not a table"),
    ],
)
def test_semantic_errors_name_the_key_and_its_line(text: str, line: int, reason: str) -> None:
    err = error(text)
    assert (err.line, err.reason) == (line, reason)
    assert str(err) == f"rules.toml:{line}: {reason}"


def test_error_in_an_array_of_tables_tier_has_its_line() -> None:
    text = (
        '[[rule]]\nproviders = "a"\n[[rule]]\nproviders = "b"\n'
        '[[rule.tiers]]\nthreshold = 3\nlevel = "info"\n[[rule.tiers]]\nthreshold = 9\nlevel = "loud"\n'
    )
    err = error(text)
    assert (err.line, err.reason) == (
        10,
        'rule[2].tiers[2].level: "loud" is not one of debug, info, warning, error, fatal',
    )


SILENCE_FILE = """[[rule]]
providers = "a"

[[silence]]
providers = "a"
ends_at = 2026-12-01T06:00:00Z
comment = "first"

[[silence]]
providers = "b"
ends_at = 2026-12-01T06:00:00Z
comment = "second"
"""


@pytest.mark.parametrize(
    ("old", "new", "line", "reason"),
    [
        ('comment = "second"', 'comment = ""', 12, 'silence[2].comment: "" is not a non-empty string saying why'),
        ('comment = "second"\n', "", 9, "silence[2].comment: missing"),
        ('providers = "b"\n', "", 9, "silence[2].providers: missing"),
        (
            'comment = "second"',
            'comment = "second"\ncreated_by = "me"',
            13,
            "silence[2].created_by: unknown key (expected one of providers, ends_at, comment)",
        ),
        (
            'ends_at = 2026-12-01T06:00:00Z\ncomment = "second"',
            'ends_at = "tomorrow"\ncomment = "second"',
            11,
            'silence[2].ends_at: "tomorrow" is not an RFC 3339 date-time such as 2026-11-27T18:00:00Z',
        ),
        (
            'ends_at = 2026-12-01T06:00:00Z\ncomment = "second"',
            'ends_at = "2026-12-01"\ncomment = "second"',
            11,
            'silence[2].ends_at: "2026-12-01" is not an RFC 3339 date-time such as 2026-11-27T18:00:00Z',
        ),
        (
            'ends_at = 2026-12-01T06:00:00Z\ncomment = "second"',
            'ends_at = 2026-12-01\ncomment = "second"',
            11,
            "silence[2].ends_at: 2026-12-01 is not an RFC 3339 date-time such as 2026-11-27T18:00:00Z",
        ),
        (
            'ends_at = 2026-12-01T06:00:00Z\ncomment = "second"',
            'ends_at = "2026-13-01T06:00:00Z"\ncomment = "second"',
            11,
            'silence[2].ends_at: "2026-13-01T06:00:00Z" is not an RFC 3339 date-time such as 2026-11-27T18:00:00Z',
        ),
        (
            'ends_at = 2026-12-01T06:00:00Z\ncomment = "second"',
            'ends_at = 1764568800\ncomment = "second"',
            11,
            "silence[2].ends_at: 1764568800 is not an RFC 3339 date-time such as 2026-11-27T18:00:00Z",
        ),
    ],
)
def test_silence_errors(old: str, new: str, line: int, reason: str) -> None:
    assert old in SILENCE_FILE
    err = error(SILENCE_FILE.replace(old, new))
    assert (err.line, err.reason) == (line, reason)


def test_thresholds_up_to_the_cap_are_accepted() -> None:
    rules = parse(
        f'[defaults]\nthreshold = {MAX_THRESHOLD}\n[[rule]]\nproviders = "a"\ntiers = [{{threshold = 1, '
        f'level = "info"}}, {{threshold = {MAX_THRESHOLD}, level = "fatal"}}]\n'
    )
    assert rules.defaults.threshold == MAX_THRESHOLD
    assert rules.rules[0].max_threshold == MAX_THRESHOLD


# --- files -----------------------------------------------------------------------------------------------------------


def test_load_rules_reads_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "real.toml"
    target.write_text('[[rule]]\nproviders = "a"\nthreshold = 2\n')
    link = tmp_path / "rules.toml"
    link.symlink_to(target)
    rules = load_rules(str(link), ENV, LOADED_AT)
    assert rules.source == str(link)
    assert rules.rule_for("a").threshold == 2


def test_load_rules_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(RulesError) as caught:
        load_rules(str(missing), ENV, LOADED_AT)
    assert caught.value.line is None
    assert str(caught.value) == f"{missing}: cannot read the rules file: No such file or directory"
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"[defaults]\nthreshold = 5\n# \xff\n")
    with pytest.raises(RulesError) as caught:
        load_rules(str(binary), ENV, LOADED_AT)
    assert str(caught.value) == f"{binary}:3: the rules file is not UTF-8 text"
    huge = tmp_path / "huge.toml"
    huge.write_bytes(b"#" * (1 << 20) + b"\n")
    with pytest.raises(RulesError, match="larger than 1048576 bytes"):
        load_rules(str(huge), ENV, LOADED_AT)


def test_the_example_file_parses() -> None:
    path = ROOT / "deploy" / "rules.example.toml"
    rules = load_rules(str(path), ENV, LOADED_AT)
    flagship = rules.rule_for("openai")
    assert flagship.window_seconds == 60.0
    assert flagship.threshold == 20
    assert [t.level for t in flagship.tiers] == ["warning", "error", "fatal"]
    assert flagship.ignores(429, None) == "status"
    assert flagship.ignores(503, None) is None
    assert flagship.ignores(503, "client_cancelled") == "error_type"
    rare = rules.rule_for("cohere")
    assert (rare.threshold, rare.window_seconds) == (3, 600.0)
    assert rules.rule_for("mistral-large") is rare
    assert rules.rule_for("anthropic").ignores(429, None) == "status"
    assert len(rules.silences) == 1
    assert rules.silences[0].covers("bedrock-eu", epoch("2026-12-01T05:59:59+00:00"))
    assert not rules.silences[0].covers("bedrock-eu", epoch("2026-12-01T06:00:00+00:00"))


# --- JSON shapes -------------------------------------------------------------------------------------------------


def test_to_json_shapes() -> None:
    rules = parse(
        """
[defaults]
threshold = 4
[[rule]]
providers = ["openai", "azure-*"]
window_seconds = 60
count_status = ["5xx", 429, 408]
ignore_error_types = ["z", "client_cancelled"]
tiers = [{threshold = 50, level = "error"}, {threshold = 20, level = "warning"}]
[[rule]]
providers = "rare"
threshold = 3
[[silence]]
providers = "bedrock-*"
ends_at = 2026-12-01T06:00:00Z
comment = "maintenance"
"""
    )
    assert rules.to_json() == {
        "source": "rules.toml",
        "loaded_at": "2026-11-27T10:00:00.000Z",
        "defaults": {
            "providers": ["*"],
            "threshold": 4,
            "window_seconds": 300.0,
            "cooldown_seconds": 60.0,
            "resolve_after_seconds": 300.0,
            "count_status": None,
            "ignore_error_types": [],
        },
        "rules": [
            {
                "providers": ["openai", "azure-*"],
                "tiers": [{"threshold": 20, "level": "warning"}, {"threshold": 50, "level": "error"}],
                "window_seconds": 60.0,
                "cooldown_seconds": 60.0,
                "resolve_after_seconds": 60.0,
                "count_status": [408, 429, "5xx"],
                "ignore_error_types": ["client_cancelled", "z"],
            },
            {
                "providers": ["rare"],
                "threshold": 3,
                "window_seconds": 300.0,
                "cooldown_seconds": 60.0,
                "resolve_after_seconds": 300.0,
                "count_status": None,
                "ignore_error_types": [],
            },
        ],
        "silences": [{"providers": ["bedrock-*"], "ends_at": "2026-12-01T06:00:00.000Z", "comment": "maintenance"}],
    }


def test_environment_to_json() -> None:
    shown = rules_from_environment(5, 300.0, 60.0, 300.0, loaded_at=0.0).to_json()
    assert shown["source"] == "environment"
    assert shown["loaded_at"] == "1970-01-01T00:00:00.000Z"
    assert shown["rules"] == []
    assert shown["silences"] == []
    assert shown["defaults"]["threshold"] == 5


def test_a_silence_ending_past_year_9999_utc_is_refused() -> None:
    with pytest.raises(RulesError) as caught:
        parse('[[silence]]\nproviders = "p"\nends_at = 9999-12-31T23:00:00-05:00\ncomment = "forever"\n')
    assert caught.value.line == 3
    assert "silence[1].ends_at" in caught.value.reason
