"""Configuration: defaults, parsing, one clear error naming the variable, and redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from alertd.config import Address, Config
from alertd.errors import ConfigError

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
