"""`alertd silence add|list|expire`: the silences API from the command line, like amtool (docs/SILENCES.md).

It reaches alertd where ALERTD_LISTEN says (host:port, or unix:/path), with ALERTD_INGEST_TOKEN (or
ALERTD_INGEST_TOKEN_FILE) as the bearer token, using only the standard library's http.client.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from alertd.client._sync import _UnixHTTPConnection
from alertd.config import Address, Config
from alertd.errors import ConfigError
from alertd.silences import parse_duration

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
COLUMNS = ("ID", "PROVIDERS", "ENDS_AT", "ACTIVE", "CREATED_BY", "COMMENT")
# A listener on every address is reached on loopback.
_ANY_HOST = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104 - mapped away from, never bound


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: expected seconds (90), or a number with s, m, h or d (90s, 30m, 2h), "
            "greater than 0 and at most 366 days"
        ) from None


def add_silence_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `silence add|list|expire` to the `alertd` command's subcommands."""
    silence = commands.add_parser(
        "silence",
        help="add, list or expire silences through the API (ALERTD_LISTEN, ALERTD_INGEST_TOKEN)",
        description="Manage silences through alertd's API at ALERTD_LISTEN, with ALERTD_INGEST_TOKEN.",
    )
    silence.add_argument("--timeout", type=_timeout, default=10.0, help="seconds to wait for alertd (default 10)")
    actions = silence.add_subparsers(dest="silence_command", required=True)
    add = actions.add_parser("add", help="silence the providers matching GLOB; prints the new silence's id")
    add.add_argument("providers", metavar="GLOB", help="providers to silence, a glob such as openai or 'bedrock-*'")
    add.add_argument("--duration", required=True, type=_duration, help="how long: 90, 90s, 30m, 2h or 1d")
    add.add_argument("--comment", required=True, help="why (required)")
    add.add_argument("--created-by", help="who (default: $USER)")
    listing = actions.add_parser("list", help="active silences and those that ended in the last hour")
    listing.add_argument("--json", action="store_true", help="print the silences as a JSON array")
    expire = actions.add_parser("expire", help="end a silence now")
    expire.add_argument("id", metavar="ID", help="the silence's id (from add or list)")


def _timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from above 0 to 3600")
    return seconds


# The only settings the silence commands read: where alertd listens, and its token.
CLIENT_VARIABLES = ("ALERTD_LISTEN", "ALERTD_INGEST_TOKEN", "ALERTD_INGEST_TOKEN_FILE")


class _RefusedError(Exception):
    """alertd answered with an error, or could not be reached."""


def run_silence(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run `alertd silence ...`: 0 on success, 1 when alertd refuses or cannot be reached, 2 on bad settings."""
    try:
        # Only the client's settings: a daemon setting that is wrong must not stop an operator's silence.
        config = Config.from_environ({name: environ[name] for name in CLIENT_VARIABLES if name in environ})
    except ConfigError as exc:
        print(f"alertd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    client = _Client(config, args.timeout)
    try:
        if args.silence_command == "add":
            body = {
                "providers": args.providers,
                "duration_seconds": args.duration,
                "comment": args.comment,
                "created_by": args.created_by or environ.get("USER") or None,
            }
            created = client.call("POST", "/v1/silences", body, expect=201)
            print(created["id"])
        elif args.silence_command == "list":
            silences = client.call("GET", "/v1/silences", expect=200)["silences"]
            print(json.dumps(silences, indent=2) if args.json else _table(silences))
        else:
            client.call("DELETE", f"/v1/silences/{quote(args.id, safe='')}", expect=204)
    except _RefusedError as exc:
        print(f"alertd: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


class _Client:
    def __init__(self, config: Config, timeout: float) -> None:
        self._listen = config.listen
        self._token = config.ingest_token
        self._timeout = timeout

    def _connection(self) -> http.client.HTTPConnection:
        if isinstance(self._listen, Address):
            host = _ANY_HOST.get(self._listen.host, self._listen.host)
            return http.client.HTTPConnection(host, self._listen.port, timeout=self._timeout)
        return _UnixHTTPConnection(self._listen.path, self._timeout)

    def call(self, method: str, path: str, body: Any = None, *, expect: int) -> dict[str, Any]:
        """The JSON answer ({} when empty); raises _RefusedError with the reason for any other status or no answer."""
        headers = {"Accept": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection = self._connection()
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            raise _RefusedError(f"cannot reach alertd at ALERTD_LISTEN={self._listen}: {reason}") from None
        finally:
            connection.close()
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = None
        if response.status != expect:
            detail = answer.get("detail") if isinstance(answer, dict) else None
            text = detail if isinstance(detail, str) else raw[:200].decode("utf-8", "replace").strip()
            raise _RefusedError(f"{method} {path} answered {response.status} {response.reason}: {text}")
        if not isinstance(answer, dict):
            raise _RefusedError(f"{method} {path} answered {response.status} with a body that is not a JSON object")
        return answer


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    # One line per silence, whatever the comment holds.
    return " ".join(str(value).split()) or "-"


def _table(silences: list[dict[str, Any]]) -> str:
    keys = ("id", "providers", "ends_at", "active", "created_by", "comment")
    rows = [COLUMNS, *([_cell(s.get(key)) for key in keys] for s in silences)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]) for row in rows
    )
