"""Configuration: defaults, parsing, one clear error naming the variable, and redaction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alertd.cli import main
from alertd.config import Address, Config
from alertd.errors import ConfigError
from alertd.sentry_config import SentryApi

DSN = "https://abcdef0123456789@o1.ingest.sentry.io/123"


def test_defaults() -> None:
    config = Config.from_environ({})
    assert config.listen == Address("127.0.0.1", 9180)
    assert config.metrics_listen == Address("0.0.0.0", 9181)
    assert (config.threshold, config.window_seconds, config.cooldown_seconds) == (5, 300.0, 60.0)
    assert config.cleanup_interval_seconds == 30.0
    assert (config.max_providers, config.max_body_bytes, config.shutdown_timeout_seconds) == (10_000, 1_048_576, 5.0)
    assert config.sentry_dsn is None
    assert config.sentry_environment == "production"
    assert (config.log_level, config.log_format) == ("info", "json")


def test_parses_every_variable() -> None:
    config = Config.from_environ(
        {
            "ALERTD_LISTEN": "[::1]:8000",
            "ALERTD_METRICS_LISTEN": "127.0.0.1:0",
            "ALERTD_THRESHOLD": "3",
            "ALERTD_WINDOW_SECONDS": "2.5",
            "ALERTD_COOLDOWN_SECONDS": "0",
            "ALERTD_CLEANUP_INTERVAL_SECONDS": "0.5",
            "ALERTD_MAX_PROVIDERS": "7",
            "ALERTD_MAX_BODY_BYTES": "4096",
            "ALERTD_SHUTDOWN_TIMEOUT_SECONDS": "1.5",
            "ALERTD_INGEST_TOKEN": "tok",
            "ALERTD_API_KEY_SALT": "salt",
            "ALERTD_LOG_LEVEL": "DEBUG",
            "ALERTD_LOG_FORMAT": "console",
            "SENTRY_DSN": DSN,
            "SENTRY_ENVIRONMENT": "staging",
            "SENTRY_RELEASE": "r1",
            "SENTRY_SAMPLE_RATE": "0.25",
        }
    )
    assert config.listen == Address("::1", 8000)
    assert str(config.listen) == "[::1]:8000"
    assert (config.threshold, config.window_seconds, config.cooldown_seconds) == (3, 2.5, 0.0)
    assert config.log_level == "debug"
    assert config.sentry_sample_rate == 0.25
    assert config.sentry_dsn is not None
    assert config.sentry_dsn.url == DSN
    assert set(config.secrets) == {"tok", "salt", "abcdef0123456789"}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ALERTD_LISTEN", "nohostport"),
        ("ALERTD_LISTEN", "127.0.0.1:99999"),
        ("ALERTD_METRICS_LISTEN", ":9181"),
        ("ALERTD_THRESHOLD", "0"),
        ("ALERTD_THRESHOLD", "10001"),
        ("ALERTD_THRESHOLD", "2.5"),
        ("ALERTD_WINDOW_SECONDS", "0"),
        ("ALERTD_WINDOW_SECONDS", "nan"),
        ("ALERTD_WINDOW_SECONDS", "inf"),
        ("ALERTD_WINDOW_SECONDS", "1e-310"),
        ("ALERTD_WINDOW_SECONDS", "1e9"),
        ("ALERTD_COOLDOWN_SECONDS", "1e9"),
        ("ALERTD_COOLDOWN_SECONDS", "-1"),
        ("ALERTD_CLEANUP_INTERVAL_SECONDS", "soon"),
        ("ALERTD_MAX_PROVIDERS", "0"),
        ("ALERTD_MAX_BODY_BYTES", "10"),
        ("ALERTD_SHUTDOWN_TIMEOUT_SECONDS", "-5"),
        ("ALERTD_LOG_LEVEL", "verbose"),
        ("ALERTD_LOG_FORMAT", "xml"),
        ("SENTRY_SAMPLE_RATE", "half"),
        ("ALERTD_INGEST_TOKEN", "has space"),
    ],
)
def test_bad_values_name_the_variable_the_value_and_what_is_accepted(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_environ({variable: value})
    message = str(info.value)
    assert message.startswith(f"{variable}=")
    assert "expected" in message
    if variable != "ALERTD_INGEST_TOKEN":
        assert repr(value) in message


def test_bad_dsn_is_reported_without_its_key() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_environ({"SENTRY_DSN": "ftp://secretkey@host/notaproject"})
    assert "SENTRY_DSN" in str(info.value)
    assert "secretkey" not in str(info.value)


def test_sample_rate_is_clamped_with_a_warning() -> None:
    config = Config.from_environ({"SENTRY_SAMPLE_RATE": "1.5"})
    assert config.sentry_sample_rate == 1.0
    assert any("SENTRY_SAMPLE_RATE" in w for w in config.warnings)
    assert Config.from_environ({"SENTRY_SAMPLE_RATE": "-2"}).sentry_sample_rate == 0.0


def test_redacted_view_hides_every_secret() -> None:
    config = Config.from_environ({"ALERTD_INGEST_TOKEN": "tok3n", "ALERTD_API_KEY_SALT": "s4lt", "SENTRY_DSN": DSN})
    text = repr(config.redacted()) + repr(config)
    for secret in ("tok3n", "s4lt", "abcdef0123456789"):
        assert secret not in text
    assert config.redacted()["SENTRY_DSN"] == "https://***@o1.ingest.sentry.io/123"


def test_secrets_can_come_from_files(tmp_path: Path) -> None:
    (tmp_path / "salt").write_text("file-salt\n")
    (tmp_path / "token").write_text("file-token")
    (tmp_path / "dsn").write_text(DSN + "\n")
    config = Config.from_environ(
        {
            "ALERTD_API_KEY_SALT_FILE": str(tmp_path / "salt"),
            "ALERTD_INGEST_TOKEN_FILE": str(tmp_path / "token"),
            "SENTRY_DSN_FILE": str(tmp_path / "dsn"),
        }
    )
    assert (config.api_key_salt, config.ingest_token) == ("file-salt", "file-token")
    assert config.sentry_dsn is not None
    assert config.sentry_dsn.url == DSN


def test_secret_file_errors_name_the_file_variable(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"^SENTRY_DSN_FILE=.*a readable file \(No such file"):
        Config.from_environ({"SENTRY_DSN_FILE": missing})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=r"^ALERTD_API_KEY_SALT_FILE=.*not an empty one"):
        Config.from_environ({"ALERTD_API_KEY_SALT_FILE": str(tmp_path / "empty")})
    (tmp_path / "token").write_text("t")
    with pytest.raises(ConfigError, match=r"^ALERTD_INGEST_TOKEN_FILE=.*give one of the two"):
        Config.from_environ({"ALERTD_INGEST_TOKEN_FILE": str(tmp_path / "token"), "ALERTD_INGEST_TOKEN": "t"})


def test_bad_secret_from_a_file_is_redacted(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("has space secret")
    with pytest.raises(ConfigError) as info:
        Config.from_environ({"ALERTD_INGEST_TOKEN_FILE": str(tmp_path / "token")})
    assert "secret" not in str(info.value)
    assert str(info.value).startswith("ALERTD_INGEST_TOKEN=")


def test_redis_url_can_come_from_a_file_and_its_password_stays_hidden(tmp_path: Path) -> None:
    url_file = tmp_path / "ALERTD_REDIS_URL"
    url_file.write_text("redis://alertd:s3cret-pw@redis.example:6379/0\n")
    config = Config.from_environ({"ALERTD_REDIS_URL_FILE": str(url_file)})
    assert config.redis_url is not None
    assert config.redis_url.url == "redis://alertd:s3cret-pw@redis.example:6379/0"
    assert config.redacted()["ALERTD_REDIS_URL"] == "redis://alertd:***@redis.example:6379/0"
    assert "s3cret-pw" in config.secrets
    # A bad URL in the file is shown like a bad one in the environment: the password as ***, the rest kept.
    url_file.write_text("redis://alertd:s3cret-pw@redis.example:port/0")
    with pytest.raises(ConfigError) as info:
        Config.from_environ({"ALERTD_REDIS_URL_FILE": str(url_file)})
    assert (info.value.variable, info.value.value) == ("ALERTD_REDIS_URL", "redis://alertd:***@redis.example:port/0")
    assert "s3cret-pw" not in str(info.value)
    with pytest.raises(ConfigError, match=r"^ALERTD_REDIS_URL_FILE=.*give one of the two"):
        Config.from_environ({"ALERTD_REDIS_URL_FILE": str(url_file), "ALERTD_REDIS_URL": "redis://h:6379"})


SENTRY_TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
RESOLVE_ENV = {"SENTRY_DSN": DSN, "SENTRY_AUTH_TOKEN": SENTRY_TOKEN, "SENTRY_ORG": "acme"}


def test_resolution_is_off_without_a_token_and_org() -> None:
    config = Config.from_environ({"SENTRY_DSN": DSN})
    assert config.sentry_api is None
    assert config.redacted()["SENTRY_AUTH_TOKEN"] is None


def test_resolution_against_sentry_io() -> None:
    config = Config.from_environ(RESOLVE_ENV)
    assert config.sentry_api == SentryApi(api_url="https://sentry.io", org="acme", project_id=123, token=SENTRY_TOKEN)
    assert SENTRY_TOKEN in config.secrets
    printed = repr(config) + repr(config.redacted())
    assert SENTRY_TOKEN not in printed
    assert config.redacted()["SENTRY_AUTH_TOKEN"] == "<redacted>"
    assert (config.redacted()["SENTRY_ORG"], config.redacted()["SENTRY_API_URL"]) == ("acme", "https://sentry.io")


@pytest.mark.parametrize(
    ("dsn", "api_url"),
    [
        ("https://k@sentry.io/7", "https://sentry.io"),
        ("https://k@o1.ingest.us.sentry.io/7", "https://sentry.io"),
        ("http://k@sentry.internal:9000/7", "http://sentry.internal:9000"),
        ("https://k@errors.example.com/sentry/7", "https://errors.example.com/sentry"),
        ("https://k@notsentry.io/7", "https://notsentry.io"),
    ],
)
def test_the_api_url_follows_the_dsn(dsn: str, api_url: str) -> None:
    config = Config.from_environ({**RESOLVE_ENV, "SENTRY_DSN": dsn})
    assert config.sentry_api is not None
    assert (config.sentry_api.api_url, config.sentry_api.project_id) == (api_url, 7)


def test_sentry_api_url_overrides_the_default() -> None:
    config = Config.from_environ({**RESOLVE_ENV, "SENTRY_API_URL": "https://de.sentry.io/"})
    assert config.sentry_api is not None
    assert config.sentry_api.api_url == "https://de.sentry.io"


def test_sentry_api_url_without_a_token_is_a_warning() -> None:
    config = Config.from_environ({"SENTRY_DSN": DSN, "SENTRY_API_URL": "https://sentry.io"})
    assert config.sentry_api is None
    assert any("SENTRY_API_URL" in w for w in config.warnings)


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"SENTRY_AUTH_TOKEN": SENTRY_TOKEN, "SENTRY_DSN": DSN}, "SENTRY_ORG"),
        ({"SENTRY_ORG": "acme", "SENTRY_DSN": DSN}, "SENTRY_AUTH_TOKEN"),
        ({"SENTRY_AUTH_TOKEN": SENTRY_TOKEN, "SENTRY_ORG": "acme"}, "SENTRY_DSN"),
        ({**RESOLVE_ENV, "SENTRY_ORG": "acme/../other"}, "SENTRY_ORG"),
        ({**RESOLVE_ENV, "SENTRY_API_URL": "ftp://sentry.io"}, "SENTRY_API_URL"),
        ({**RESOLVE_ENV, "SENTRY_API_URL": "https://user:pw@sentry.io"}, "SENTRY_API_URL"),
        ({**RESOLVE_ENV, "SENTRY_API_URL": "https://sentry.io/?x=1"}, "SENTRY_API_URL"),
        ({**RESOLVE_ENV, "SENTRY_API_URL": "https://sentry.io:99999"}, "SENTRY_API_URL"),
        ({**RESOLVE_ENV, "SENTRY_AUTH_TOKEN": f"{SENTRY_TOKEN} x"}, "SENTRY_AUTH_TOKEN"),
    ],
)
def test_an_incomplete_or_bad_sentry_api_setting_names_the_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_environ(environ)
    assert info.value.variable == variable
    assert str(info.value).startswith(f"{variable}=")
    assert SENTRY_TOKEN not in str(info.value)


def test_the_sentry_token_can_come_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(SENTRY_TOKEN + "\n")
    config = Config.from_environ(
        {"SENTRY_DSN": DSN, "SENTRY_ORG": "acme", "SENTRY_AUTH_TOKEN_FILE": str(tmp_path / "token")}
    )
    assert config.sentry_api is not None
    assert config.sentry_api.token == SENTRY_TOKEN
    with pytest.raises(ConfigError, match=r"^SENTRY_AUTH_TOKEN_FILE=.*give one of the two"):
        Config.from_environ({**RESOLVE_ENV, "SENTRY_AUTH_TOKEN_FILE": str(tmp_path / "token")})
    (tmp_path / "token").write_text("has space " + SENTRY_TOKEN)
    with pytest.raises(ConfigError) as info:
        Config.from_environ(
            {"SENTRY_DSN": DSN, "SENTRY_ORG": "acme", "SENTRY_AUTH_TOKEN_FILE": str(tmp_path / "token")}
        )
    assert SENTRY_TOKEN not in str(info.value)


def test_resolve_after_defaults_to_the_window() -> None:
    assert Config.from_environ({}).resolve_after_seconds == 300.0
    assert Config.from_environ({"ALERTD_WINDOW_SECONDS": "42.5"}).resolve_after_seconds == 42.5
    config = Config.from_environ({"ALERTD_WINDOW_SECONDS": "42.5", "ALERTD_RESOLVE_AFTER_SECONDS": "7"})
    assert (config.window_seconds, config.resolve_after_seconds) == (42.5, 7.0)
    assert config.redacted()["ALERTD_RESOLVE_AFTER_SECONDS"] == 7.0


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1e-310", "1e9", "soon"])
def test_resolve_after_is_validated_like_the_window(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_environ({"ALERTD_RESOLVE_AFTER_SECONDS": value})
    assert str(info.value) == f"ALERTD_RESOLVE_AFTER_SECONDS={value!r} is invalid: expected a number from 0.001 to 1e7"


def test_check_config_with_a_token_and_an_org_exits_0_and_redacts_the_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config"], environ=RESOLVE_ENV) == 0
    out, err = capsys.readouterr()
    printed = json.loads(out)["config"]
    assert printed["SENTRY_AUTH_TOKEN"] == "<redacted>"
    assert (printed["SENTRY_ORG"], printed["SENTRY_API_URL"]) == ("acme", "https://sentry.io")
    assert SENTRY_TOKEN not in out + err
    assert main(["check-config"], environ={"ALERTD_RESOLVE_AFTER_SECONDS": "0"}) == 2
    assert capsys.readouterr().err.startswith("alertd: ALERTD_RESOLVE_AFTER_SECONDS='0' is invalid")
