"""Cluster-mode settings: defaults, validation naming the variable, and the password never printed."""

from __future__ import annotations

import json

import pytest

from alertd.config import Config, redact_url
from alertd.errors import ConfigError
from tests.test_cli import run_alertd

PASSWORD = "s3cr3t-redis-pw-9f8e7d"


def test_defaults_mean_the_in_memory_tracker() -> None:
    config = Config.from_environ({})
    assert config.redis_url is None
    assert (config.redis_prefix, config.redis_timeout_seconds, config.redis_cluster) == ("alertd:", 0.25, False)


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost",
        "redis://:pw@10.0.0.1:6380/2",
        "redis://user:pw@[::1]:6379",
        "rediss://redis.example:6380/0",
        "unix:///run/redis/redis.sock",
    ],
)
def test_accepts_redis_urls(url: str) -> None:
    config = Config.from_environ(
        {"ALERTD_REDIS_URL": url, "ALERTD_REDIS_PREFIX": "a:b:", "ALERTD_REDIS_TIMEOUT_SECONDS": "0.5"}
    )
    assert config.redis_url is not None
    assert config.redis_url.url == url
    assert (config.redis_prefix, config.redis_timeout_seconds) == ("a:b:", 0.5)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ALERTD_REDIS_URL", "http://localhost:6379"),
        ("ALERTD_REDIS_URL", "redis://"),
        ("ALERTD_REDIS_URL", "redis://host:99999"),
        ("ALERTD_REDIS_URL", "redis://host/db"),
        ("ALERTD_REDIS_URL", "unix://relative.sock"),
        ("ALERTD_REDIS_PREFIX", "with space"),
        ("ALERTD_REDIS_PREFIX", "{tag}"),
        ("ALERTD_REDIS_PREFIX", "x" * 65),
        ("ALERTD_REDIS_TIMEOUT_SECONDS", "0"),
        ("ALERTD_REDIS_TIMEOUT_SECONDS", "11"),
        ("ALERTD_REDIS_TIMEOUT_SECONDS", "nan"),
        ("ALERTD_REDIS_CLUSTER", "maybe"),
    ],
)
def test_rejects_bad_values_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_environ({variable: value})
    assert caught.value.variable == variable


def test_cluster_needs_tcp() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_environ({"ALERTD_REDIS_URL": "unix:///tmp/r.sock", "ALERTD_REDIS_CLUSTER": "true"})
    assert caught.value.variable == "ALERTD_REDIS_CLUSTER"
    assert Config.from_environ({"ALERTD_REDIS_URL": "redis://h:7000", "ALERTD_REDIS_CLUSTER": "yes"}).redis_cluster


def test_password_is_a_secret_and_redacted() -> None:
    config = Config.from_environ({"ALERTD_REDIS_URL": f"redis://alertd:{PASSWORD}@redis:6379/0"})
    assert PASSWORD in config.secrets
    assert config.redacted()["ALERTD_REDIS_URL"] == "redis://alertd:***@redis:6379/0"
    assert PASSWORD not in repr(config)
    assert redact_url(f"redis://:{PASSWORD}@h:notaport") == "redis://:***@h:notaport"


@pytest.mark.anyio
async def test_check_config_needs_no_redis_and_never_prints_the_password() -> None:
    env = {
        "ALERTD_REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:1/0",  # nothing listens there
        "ALERTD_REDIS_PREFIX": "team-a:",
        "ALERTD_REDIS_TIMEOUT_SECONDS": "0.1",
    }
    code, out, err = await run_alertd("check-config", env=env)
    assert code == 0, err
    printed = json.loads(out)["config"]
    assert printed["ALERTD_REDIS_URL"] == "redis://:***@127.0.0.1:1/0"
    assert (printed["ALERTD_REDIS_PREFIX"], printed["ALERTD_REDIS_TIMEOUT_SECONDS"]) == ("team-a:", 0.1)
    assert PASSWORD not in out + err


@pytest.mark.anyio
async def test_bad_url_exits_2_naming_the_variable_without_the_password() -> None:
    for command in ("check-config", "serve"):
        code, out, err = await run_alertd(command, env={"ALERTD_REDIS_URL": f"redis://:{PASSWORD}@host:port"})
        assert code == 2
        assert err.startswith("alertd: ALERTD_REDIS_URL=")
        assert PASSWORD not in out + err


@pytest.mark.parametrize(
    "url",
    [
        f"redis://127.0.0.1:6379/0?password={PASSWORD}",
        f"unix:///run/redis.sock?db=0&password={PASSWORD}",
        f"rediss://user:{PASSWORD}@redis.example:6380",
    ],
)
def test_password_in_the_query_or_user_part_is_never_printed(url: str) -> None:
    config = Config.from_environ({"ALERTD_REDIS_URL": url})
    assert PASSWORD in config.secrets
    assert PASSWORD not in json.dumps(config.redacted())
    assert "***" in config.redacted()["ALERTD_REDIS_URL"]


def test_an_encoded_password_is_a_secret_in_both_forms() -> None:
    config = Config.from_environ({"ALERTD_REDIS_URL": "redis://:p%40ss-word-1@h:6379"})
    assert {"p%40ss-word-1", "p@ss-word-1"} <= set(config.secrets)
    with pytest.raises(ConfigError) as caught:
        Config.from_environ({"ALERTD_REDIS_URL": f"redis://h:bad?password={PASSWORD}"})
    assert PASSWORD not in str(caught.value)
