"""The daemon's configuration: one frozen value parsed from an environment mapping.

Nothing else in alertd reads `os.environ`; the CLI passes it to `Config.from_environ`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from alertd.errors import ConfigError
from alertd.sentry_config import API_URL_ACCEPTED, ORG_ACCEPTED, SentryApi, build_sentry_api, parse_api_url, parse_org

T = TypeVar("T")

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("json", "console")
MAX_THRESHOLD = 10_000
# Window and cooldown stay within what the bucket arithmetic and Redis expiries handle (~115 days).
MAX_SECONDS = 1e7


@dataclass(frozen=True, slots=True)
class Address:
    """A TCP listen address."""

    host: str
    port: int

    @classmethod
    def from_string(cls, text: str) -> Address:
        """Parse `host:port` or `[ipv6]:port`; raises ValueError."""
        host, sep, port_text = text.rpartition(":")
        if not sep or not host or not port_text.isdigit():
            raise ValueError(text)
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        port = int(port_text)
        if not 0 <= port <= 65535 or not host or any(c.isspace() for c in host):
            raise ValueError(text)
        return cls(host, port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class UnixAddress:
    """A Unix domain socket path, written `unix:/path/to.sock`."""

    path: str

    def __str__(self) -> str:
        return f"unix:{self.path}"


ListenAddress = Address | UnixAddress


def parse_listen(text: str) -> ListenAddress:
    """Parse `unix:/absolute/path` or `host:port`; raises ValueError."""
    if text.startswith("unix:"):
        path = text.removeprefix("unix:")
        if not path.startswith("/") or "\0" in path or len(path.encode()) > 107:
            raise ValueError(text)
        return UnixAddress(path)
    return Address.from_string(text)


def _mode(text: str) -> int:
    mode = int(text, 8)
    if not 0 <= mode <= 0o777:
        raise ValueError(text)
    return mode


@dataclass(frozen=True, slots=True)
class Dsn:
    """A Sentry DSN; its public key is a secret and never printed."""

    url: str = field(repr=False)

    @classmethod
    def from_string(cls, text: str) -> Dsn:
        """Check the DSN's shape (`https://KEY@HOST/PROJECT`); raises ValueError."""
        parts = urlsplit(text)
        if (
            parts.scheme not in ("http", "https")
            or not parts.username
            or not parts.hostname
            or not parts.path.strip("/").split("/")[-1].isdigit()
        ):
            raise ValueError(text)
        return cls(text)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The parts of the DSN that must never appear in output."""
        parts = urlsplit(self.url)
        return tuple(s for s in (parts.username, parts.password) if s)

    def redacted(self) -> str:
        """The DSN with its key replaced by `***`."""
        parts = urlsplit(self.url)
        netloc = parts.netloc.rpartition("@")[2]
        return f"{parts.scheme}://***@{netloc}{parts.path}"


REDIS_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True, slots=True)
class RedisUrl:
    """Where cluster mode keeps its state: `redis://`, `rediss://` (TLS) or `unix://`; the password is secret."""

    url: str = field(repr=False)

    @classmethod
    def from_string(cls, text: str) -> RedisUrl:
        """Check the URL's shape; raises ValueError."""
        parts = urlsplit(text)
        if parts.scheme not in REDIS_SCHEMES or any(c.isspace() for c in text):
            raise ValueError(text)
        if parts.scheme == "unix":
            if not parts.path.startswith("/"):
                raise ValueError(text)
        else:
            _ = parts.port  # raises ValueError when the port is not a number in range
            db = parts.path.strip("/")
            if not parts.hostname or (db and not db.isdigit()):
                raise ValueError(text)
        return cls(text)

    @property
    def is_unix(self) -> bool:
        """True for a Unix socket URL."""
        return urlsplit(self.url).scheme == "unix"

    @property
    def secrets(self) -> tuple[str, ...]:
        """The password (user part or `?password=`), raw and percent-decoded, which must never appear in output."""
        parts = urlsplit(self.url)
        found = [parts.password or "", *parse_qs(parts.query).get("password", [])]
        found += [m.group(1) for m in _QUERY_PASSWORD.finditer(parts.query)]
        found += [unquote(p) for p in found]
        return tuple(sorted({p for p in found if p}))

    def redacted(self) -> str:
        """The URL with its password replaced by `***`."""
        return redact_url(self.url)


_QUERY_PASSWORD = re.compile(r"(?:^|&)password=([^&#]*)", re.IGNORECASE)


def redact_url(text: str) -> str:
    """`text` with the password (user part or `password=` query) replaced by `***`, even when malformed."""
    text = re.sub(r"([?&]password=)[^&#]*", r"\1***", text, flags=re.IGNORECASE)
    scheme, sep, rest = text.partition("://")
    if not sep or "@" not in rest:
        return text
    userinfo, _, host = rest.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as file:
        return file.read()


@dataclass(frozen=True, slots=True)
class Config:
    """Every setting of the daemon, validated."""

    listen: ListenAddress = Address("127.0.0.1", 9180)
    metrics_listen: Address = Address("0.0.0.0", 9181)  # noqa: S104 - Prometheus scrapes from outside the pod
    socket_mode: int = 0o660
    threshold: int = 5
    window_seconds: float = 300.0
    cooldown_seconds: float = 60.0
    cleanup_interval_seconds: float = 30.0
    max_providers: int = 10_000
    max_body_bytes: int = 1_048_576
    shutdown_timeout_seconds: float = 5.0
    client_timeout_seconds: float = 30.0
    max_connections: int = 1000
    ingest_token: str | None = field(default=None, repr=False)
    api_key_salt: str | None = field(default=None, repr=False)
    log_level: str = "info"
    log_format: str = "json"
    sentry_dsn: Dsn | None = None
    sentry_environment: str = "production"
    sentry_release: str | None = None
    sentry_sample_rate: float = 1.0
    redis_url: RedisUrl | None = None
    redis_prefix: str = "alertd:"
    redis_timeout_seconds: float = 0.25
    redis_cluster: bool = False
    # The default follows window_seconds in `from_environ` (ALERTD_RESOLVE_AFTER_SECONDS unset).
    resolve_after_seconds: float = 300.0
    # Set when SENTRY_AUTH_TOKEN and SENTRY_ORG are: resolve a provider's Sentry issue when its episode ends.
    sentry_api: SentryApi | None = None
    rules_file: str | None = None
    state_file: str | None = None
    state_snapshot_seconds: float = 30.0
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], read_text: Callable[[str], str] = _read_text) -> Config:
        """Build the config from `environ`; raises ConfigError naming the first bad variable.

        Each secret may instead be given as a file path in NAME_FILE (a mounted Kubernetes Secret);
        `read_text` reads it.
        """
        warnings: list[str] = []
        env = _Reader(_with_secret_files(environ, read_text))
        d = cls()
        sample_rate = env.get("SENTRY_SAMPLE_RATE", 1.0, _finite_float, "a number between 0 and 1")
        if not 0.0 <= sample_rate <= 1.0:
            clamped = min(1.0, max(0.0, sample_rate))
            warnings.append(f"SENTRY_SAMPLE_RATE={sample_rate} is outside [0, 1]; using {clamped}")
            sample_rate = clamped
        salt = env.get("ALERTD_API_KEY_SALT", None, _non_empty, "a non-empty string")
        if salt is None:
            warnings.append("ALERTD_API_KEY_SALT is unset: API keys are hashed without a salt; set one per deployment")
        redis_url = env.get(
            "ALERTD_REDIS_URL",
            None,
            RedisUrl.from_string,
            "a URL redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], rediss://… or unix:///path",
        )
        redis_cluster = env.get("ALERTD_REDIS_CLUSTER", d.redis_cluster, _boolean, "true or false")
        if redis_cluster and redis_url is not None and redis_url.is_unix:
            raise ConfigError(
                "ALERTD_REDIS_CLUSTER", "true", "false with a unix:// ALERTD_REDIS_URL (a cluster is reached over TCP)"
            )
        window_seconds = env.get(
            "ALERTD_WINDOW_SECONDS", d.window_seconds, _seconds_in(0.001, MAX_SECONDS), "a number from 0.001 to 1e7"
        )
        sentry_dsn = env.get("SENTRY_DSN", None, Dsn.from_string, "a Sentry DSN like https://KEY@HOST/PROJECT_ID")
        sentry_api, api_warnings = build_sentry_api(
            token=env.get("SENTRY_AUTH_TOKEN", None, _token, "a Sentry auth token (visible ASCII, no spaces)"),
            org=env.get("SENTRY_ORG", None, parse_org, ORG_ACCEPTED),
            api_url=env.get("SENTRY_API_URL", None, parse_api_url, API_URL_ACCEPTED),
            dsn_url=None if sentry_dsn is None else sentry_dsn.url,
        )
        warnings.extend(api_warnings)
        return cls(
            listen=env.get(
                "ALERTD_LISTEN", d.listen, parse_listen, "HOST:PORT (e.g. 127.0.0.1:9180) or unix:/absolute/path.sock"
            ),
            socket_mode=env.get("ALERTD_SOCKET_MODE", d.socket_mode, _mode, "an octal file mode such as 0660"),
            metrics_listen=env.get(
                "ALERTD_METRICS_LISTEN", d.metrics_listen, Address.from_string, "HOST:PORT, e.g. 0.0.0.0:9181"
            ),
            threshold=env.get(
                "ALERTD_THRESHOLD", d.threshold, _int_in(1, MAX_THRESHOLD), f"an integer from 1 to {MAX_THRESHOLD}"
            ),
            window_seconds=window_seconds,
            cooldown_seconds=env.get(
                "ALERTD_COOLDOWN_SECONDS", d.cooldown_seconds, _seconds_in(0.0, MAX_SECONDS), "a number from 0 to 1e7"
            ),
            cleanup_interval_seconds=env.get(
                "ALERTD_CLEANUP_INTERVAL_SECONDS", d.cleanup_interval_seconds, _positive, "a number > 0"
            ),
            max_providers=env.get(
                "ALERTD_MAX_PROVIDERS", d.max_providers, _int_in(1, 10_000_000), "an integer from 1 to 10000000"
            ),
            max_body_bytes=env.get(
                "ALERTD_MAX_BODY_BYTES", d.max_body_bytes, _int_in(64, 1 << 30), "an integer from 64 to 1073741824"
            ),
            shutdown_timeout_seconds=env.get(
                "ALERTD_SHUTDOWN_TIMEOUT_SECONDS", d.shutdown_timeout_seconds, _non_negative, "a number >= 0"
            ),
            client_timeout_seconds=env.get(
                "ALERTD_CLIENT_TIMEOUT_SECONDS", d.client_timeout_seconds, _positive, "a number > 0"
            ),
            max_connections=env.get(
                "ALERTD_MAX_CONNECTIONS", d.max_connections, _int_in(1, 1_000_000), "an integer from 1 to 1000000"
            ),
            ingest_token=env.get("ALERTD_INGEST_TOKEN", None, _token, "a non-empty string of visible ASCII"),
            api_key_salt=salt,
            log_level=env.get("ALERTD_LOG_LEVEL", d.log_level, _choice(LOG_LEVELS), "|".join(LOG_LEVELS)),
            log_format=env.get("ALERTD_LOG_FORMAT", d.log_format, _choice(LOG_FORMATS), "|".join(LOG_FORMATS)),
            sentry_dsn=sentry_dsn,
            sentry_environment=env.get("SENTRY_ENVIRONMENT", d.sentry_environment, _non_empty, "a non-empty string"),
            sentry_release=env.get("SENTRY_RELEASE", None, _non_empty, "a non-empty string"),
            sentry_sample_rate=sample_rate,
            redis_url=redis_url,
            redis_prefix=env.get(
                "ALERTD_REDIS_PREFIX", d.redis_prefix, _key_prefix, "1-64 visible ASCII characters other than { and }"
            ),
            redis_timeout_seconds=env.get(
                "ALERTD_REDIS_TIMEOUT_SECONDS", d.redis_timeout_seconds, _seconds_up_to(10.0), "a number > 0 and <= 10"
            ),
            redis_cluster=redis_cluster,
            resolve_after_seconds=env.get(
                "ALERTD_RESOLVE_AFTER_SECONDS",
                window_seconds,
                _seconds_in(0.001, MAX_SECONDS),
                "a number from 0.001 to 1e7",
            ),
            sentry_api=sentry_api,
            rules_file=env.get("ALERTD_RULES_FILE", None, _non_empty, "the path of a TOML rules file"),
            state_file=env.get("ALERTD_STATE_FILE", None, _non_empty, "the path of a file alertd may write"),
            state_snapshot_seconds=env.get(
                "ALERTD_STATE_SNAPSHOT_SECONDS",
                d.state_snapshot_seconds,
                _seconds_in(0.1, 86_400.0),
                "a number from 0.1 to 86400",
            ),
            warnings=tuple(warnings),
        )

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret value in the config, for redaction of output."""
        found = [s for s in (self.ingest_token, self.api_key_salt) if s]
        if self.sentry_dsn is not None:
            found.extend(self.sentry_dsn.secrets)
        if self.redis_url is not None:
            found.extend(self.redis_url.secrets)
        if self.sentry_api is not None:
            found.append(self.sentry_api.token)
        return tuple(found)

    def redacted(self) -> dict[str, Any]:
        """The effective settings by variable name, with every secret redacted."""

        def hidden(value: str | None) -> str | None:
            return None if value is None else "<redacted>"

        api = self.sentry_api

        return {
            "ALERTD_LISTEN": str(self.listen),
            "ALERTD_SOCKET_MODE": f"0{self.socket_mode:o}",
            "ALERTD_METRICS_LISTEN": str(self.metrics_listen),
            "ALERTD_THRESHOLD": self.threshold,
            "ALERTD_WINDOW_SECONDS": self.window_seconds,
            "ALERTD_COOLDOWN_SECONDS": self.cooldown_seconds,
            "ALERTD_CLEANUP_INTERVAL_SECONDS": self.cleanup_interval_seconds,
            "ALERTD_MAX_PROVIDERS": self.max_providers,
            "ALERTD_MAX_BODY_BYTES": self.max_body_bytes,
            "ALERTD_SHUTDOWN_TIMEOUT_SECONDS": self.shutdown_timeout_seconds,
            "ALERTD_CLIENT_TIMEOUT_SECONDS": self.client_timeout_seconds,
            "ALERTD_MAX_CONNECTIONS": self.max_connections,
            "ALERTD_INGEST_TOKEN": hidden(self.ingest_token),
            "ALERTD_API_KEY_SALT": hidden(self.api_key_salt),
            "ALERTD_LOG_LEVEL": self.log_level,
            "ALERTD_LOG_FORMAT": self.log_format,
            "SENTRY_DSN": None if self.sentry_dsn is None else self.sentry_dsn.redacted(),
            "SENTRY_ENVIRONMENT": self.sentry_environment,
            "SENTRY_RELEASE": self.sentry_release,
            "SENTRY_SAMPLE_RATE": self.sentry_sample_rate,
            "ALERTD_REDIS_URL": None if self.redis_url is None else self.redis_url.redacted(),
            "ALERTD_REDIS_PREFIX": self.redis_prefix,
            "ALERTD_REDIS_TIMEOUT_SECONDS": self.redis_timeout_seconds,
            "ALERTD_REDIS_CLUSTER": self.redis_cluster,
            "ALERTD_RESOLVE_AFTER_SECONDS": self.resolve_after_seconds,
            "SENTRY_AUTH_TOKEN": None if api is None else "<redacted>",
            "SENTRY_ORG": None if api is None else api.org,
            "SENTRY_API_URL": None if api is None else api.api_url,
            "ALERTD_RULES_FILE": self.rules_file,
            "ALERTD_STATE_FILE": self.state_file,
            "ALERTD_STATE_SNAPSHOT_SECONDS": self.state_snapshot_seconds,
        }


# Each may be given as NAME_FILE instead. A bad ALERTD_REDIS_URL is shown with only its password hidden.
SECRET_VARIABLES = ("ALERTD_INGEST_TOKEN", "ALERTD_API_KEY_SALT", "SENTRY_DSN", "ALERTD_REDIS_URL", "SENTRY_AUTH_TOKEN")


def _with_secret_files(environ: Mapping[str, str], read_text: Callable[[str], str]) -> Mapping[str, str]:
    """`environ` with each NAME_FILE replaced by the content of the file it names."""
    resolved: dict[str, str] | None = None
    for name in SECRET_VARIABLES:
        file_variable = f"{name}_FILE"
        path = environ.get(file_variable, "").strip()
        if not path:
            continue
        if environ.get(name, "").strip():
            raise ConfigError(file_variable, path, f"to be unset while {name} is set (give one of the two)")
        try:
            content = read_text(path).strip()
        except OSError as exc:
            raise ConfigError(file_variable, path, f"a readable file ({exc.strerror or exc})") from None
        if not content:
            raise ConfigError(file_variable, path, f"a file holding {name}, not an empty one")
        resolved = dict(environ) if resolved is None else resolved
        resolved[name] = content
    return environ if resolved is None else resolved


class _Reader:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get(self, name: str, default: T, parse: Callable[[str], T], accepted: str) -> T:
        raw = self._environ.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except ValueError:
            value = redact_url(raw) if name == "ALERTD_REDIS_URL" else "<redacted>" if name in SECRET_VARIABLES else raw
            raise ConfigError(name, value, accepted) from None


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _seconds_in(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = _finite_float(text)
        if not low <= value <= high:
            raise ValueError(text)
        return value

    return parse


def _positive(text: str) -> float:
    value = _finite_float(text)
    if value <= 0:
        raise ValueError(text)
    return value


def _non_negative(text: str) -> float:
    value = _finite_float(text)
    if value < 0:
        raise ValueError(text)
    return value


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(text)
        return value

    return parse


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.lower() not in options:
            raise ValueError(text)
        return text.lower()

    return parse


def _non_empty(text: str) -> str:
    if not text:
        raise ValueError(text)
    return text


def _token(text: str) -> str:
    if not text.isascii() or not text.isprintable() or " " in text:
        raise ValueError(text)
    return text


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(text)


def _key_prefix(text: str) -> str:
    if not 1 <= len(text) <= 64 or not text.isascii() or not text.isprintable() or any(c in text for c in " {}"):
        raise ValueError(text)
    return text


def _seconds_up_to(limit: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = _positive(text)
        if value > limit:
            raise ValueError(text)
        return value

    return parse
