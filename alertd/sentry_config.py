"""The Sentry Web API settings that resolve a provider's issue when its episode ends.

Parsed by `Config.from_environ` from SENTRY_AUTH_TOKEN, SENTRY_ORG and SENTRY_API_URL, with the
project id taken from SENTRY_DSN. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from alertd.errors import ConfigError

# An organization's slug (or numeric id): it goes into the URL path, so nothing that could leave it.
_ORG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
SAAS_API_URL = "https://sentry.io"
ORG_ACCEPTED = "a Sentry organization slug (1-64 of A-Z a-z 0-9 _ -)"
API_URL_ACCEPTED = "an http(s) URL of Sentry's web app without user, query or fragment, e.g. https://sentry.example.com"


@dataclass(frozen=True, slots=True)
class SentryApi:
    """Where and how alertd calls Sentry's Web API; the token is a secret and never printed."""

    api_url: str
    org: str
    project_id: int
    token: str = field(repr=False)


def parse_org(text: str) -> str:
    """Check an organization slug; raises ValueError."""
    if not _ORG.fullmatch(text):
        raise ValueError(text)
    return text


def parse_api_url(text: str) -> str:
    """Check SENTRY_API_URL and return it without a trailing slash; raises ValueError."""
    parts = urlsplit(text)
    _ = parts.port  # raises ValueError when the port is not a number in range
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.query
        or parts.fragment
        or any(c.isspace() for c in text)
    ):
        raise ValueError(text)
    return text.rstrip("/")


def default_api_url(dsn_url: str) -> str:
    """`https://sentry.io` for a DSN under sentry.io; otherwise the DSN's scheme, host, port and path prefix."""
    parts = urlsplit(dsn_url)
    host = (parts.hostname or "").lower()
    if host == "sentry.io" or host.endswith(".sentry.io"):
        return SAAS_API_URL
    netloc = parts.netloc.rpartition("@")[2]
    # A self-hosted Sentry under a path prefix has DSNs like https://KEY@host/prefix/PROJECT_ID.
    prefix = parts.path.strip("/").rpartition("/")[0]
    return f"{parts.scheme}://{netloc}" + (f"/{prefix}" if prefix else "")


def project_id(dsn_url: str) -> int:
    """The project id of a DSN that `Dsn.from_string` accepted (its last path segment)."""
    return int(urlsplit(dsn_url).path.strip("/").split("/")[-1])


def build_sentry_api(
    *, token: str | None, org: str | None, api_url: str | None, dsn_url: str | None
) -> tuple[SentryApi | None, tuple[str, ...]]:
    """The Web API settings (None when resolution is off) and warnings; raises ConfigError.

    Resolution is on when SENTRY_AUTH_TOKEN and SENTRY_ORG are both set; one without the other, or
    both without a SENTRY_DSN (the project id comes from it), is a configuration error.
    """
    if token is None and org is None:
        if api_url is not None:
            return None, ("SENTRY_API_URL is set but SENTRY_AUTH_TOKEN and SENTRY_ORG are not: it is unused",)
        return None, ()
    if org is None:
        raise ConfigError("SENTRY_ORG", "", f"{ORG_ACCEPTED} when SENTRY_AUTH_TOKEN is set (set both, or neither)")
    if token is None:
        raise ConfigError(
            "SENTRY_AUTH_TOKEN",
            "",
            "a Sentry auth token (scope event:write) when SENTRY_ORG is set (set both, or neither)",
        )
    if dsn_url is None:
        raise ConfigError(
            "SENTRY_DSN",
            "",
            "a Sentry DSN when SENTRY_AUTH_TOKEN and SENTRY_ORG are set (issues are resolved in the DSN's project)",
        )
    return SentryApi(
        api_url=api_url if api_url is not None else default_api_url(dsn_url),
        org=org,
        project_id=project_id(dsn_url),
        token=token,
    ), ()
