"""The settings this suite added: defaults, parsing, and a ConfigError naming the variable."""

from __future__ import annotations

import pytest

from alertd.config import Config
from alertd.errors import ConfigError


def test_defaults_and_parsing() -> None:
    default = Config.from_environ({})
    assert (default.client_timeout_seconds, default.max_connections) == (30.0, 1000)
    config = Config.from_environ({"ALERTD_CLIENT_TIMEOUT_SECONDS": "2.5", "ALERTD_MAX_CONNECTIONS": "64"})
    assert (config.client_timeout_seconds, config.max_connections) == (2.5, 64)
    assert config.redacted()["ALERTD_CLIENT_TIMEOUT_SECONDS"] == 2.5
    assert config.redacted()["ALERTD_MAX_CONNECTIONS"] == 64


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ALERTD_CLIENT_TIMEOUT_SECONDS", "0"),
        ("ALERTD_CLIENT_TIMEOUT_SECONDS", "-1"),
        ("ALERTD_CLIENT_TIMEOUT_SECONDS", "inf"),
        ("ALERTD_CLIENT_TIMEOUT_SECONDS", "soon"),
        ("ALERTD_MAX_CONNECTIONS", "0"),
        ("ALERTD_MAX_CONNECTIONS", "1.5"),
        ("ALERTD_MAX_CONNECTIONS", "1000001"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_environ({variable: value})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}={value!r} is invalid: expected ")
