"""A loopback stand-in for the one Sentry Web API endpoint alertd calls: a real aiohttp server on 127.0.0.1.

"Bulk Mutate an Organization's Issues" (https://docs.sentry.io/api/events/bulk-mutate-an-organizations-issues/):
`PUT /api/0/organizations/{organization_id_or_slug}/issues/` with the `project` and `query` query parameters,
a JSON body, and `Authorization: Bearer <token>` of a token with scope `event:write` (or `event:admin`).
For a status update without `id`, Sentry mutates the issues the filters select, answers 200 with the
new status, or 204 when nothing matched.

It checks what alertd must send, exactly: the path, one `project` (the DSN's project id) and one `query`,
the Bearer token, `Content-Type: application/json` and the body `{"status": "resolved"}`. A request that
breaks a check is answered as Sentry would (401, 404 or 400) and its reason kept in `refused`. The
Sentry web application cannot run on these machines, so this endpoint is the one place where a stand-in is right.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

import anyio
from aiohttp import web

from alertd.sentry_config import SentryApi
from tests.support.sentry_server import PROJECT_ID

TOKEN = "loopback-api-token-0123456789abcdef"
ORG = "acme"
QUERY = re.compile(r'is:unresolved alertd_kind:upstream_failure provider:"((?:\\.|[^"\\])*)"')

Scripted = int | Literal["hang"]


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One request: the provider its query selects (None if it does not parse), and the answer's status (None: hung)."""

    provider: str | None
    query: str
    project: str
    status: int | None


@dataclass
class ApiBehaviour:
    """Answers to give before behaving like Sentry: each call takes the next status, or `"hang"` never answers."""

    script: list[Scripted] = field(default_factory=list)
    # When set, every call past the script gets this status.
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


class LoopbackSentryApi:
    """Keeps the providers whose issue is unresolved; a valid call resolves it (200) or finds nothing (204)."""

    def __init__(self, *, token: str = TOKEN, org: str = ORG, project_id: int = PROJECT_ID) -> None:
        self.token = token
        self.org = org
        self.project_id = project_id
        self.unresolved: set[str] = set()
        self.calls: list[ApiCall] = []
        self.refused: list[str] = []
        self.behaviour = ApiBehaviour()
        self.port = 0
        self._arrived = anyio.Event()

    @property
    def api_url(self) -> str:
        """SENTRY_API_URL for this server."""
        return f"http://127.0.0.1:{self.port}"

    def settings(self, *, token: str | None = None) -> SentryApi:
        """The SentryApi that points alertd at this server (with another token, to be refused)."""
        return SentryApi(self.api_url, self.org, self.project_id, self.token if token is None else token)

    def _refusal(self, request: web.Request, body: bytes) -> tuple[int, str, str] | None:
        """(status, reason, Sentry's detail) when the request is not exactly what Sentry documents."""
        authorization = request.headers.get("Authorization")
        keys = sorted(request.query.keys())  # a repeated parameter appears twice
        project = request.query.get("project")
        checks = (
            (authorization is None, 401, "no Authorization header", "Authentication credentials were not provided."),
            (authorization != f"Bearer {self.token}", 401, "wrong Bearer token", "Invalid token"),
            (
                request.match_info["org"] != self.org,
                404,
                "unknown organization",
                "The requested resource does not exist",
            ),
            (keys != ["project", "query"], 400, f"query parameters {keys}", "Invalid query parameters"),
            (project != str(self.project_id), 400, f"project {project!r}", "Invalid project parameter."),
            (
                self._provider(request) is None,
                400,
                f"query {request.query.get('query')!r}",
                "Error parsing search query",
            ),
            (request.content_type != "application/json", 400, f"Content-Type {request.content_type!r}", "Unsupported"),
            (_json(body) != {"status": "resolved"}, 400, f"body {body!r}", "Invalid body"),
        )
        for failed, status, reason, detail in checks:
            if failed:
                return status, reason, detail
        return None

    def _provider(self, request: web.Request) -> str | None:
        match = QUERY.fullmatch(request.query.get("query", ""))
        return None if match is None else re.sub(r"\\(.)", r"\1", match.group(1))

    def _answer(self, request: web.Request, body: bytes) -> web.Response | Literal["hang"]:
        refusal = self._refusal(request, body)
        if refusal is not None:
            status, reason, detail = refusal
            self.refused.append(reason)
            return web.json_response({"detail": detail}, status=status)
        scripted: Scripted | None = self.behaviour.script.pop(0) if self.behaviour.script else self.behaviour.status
        if scripted == "hang":
            return "hang"
        if scripted is not None:
            return web.json_response({"detail": "scripted"}, status=scripted, headers=self.behaviour.headers)
        provider = self._provider(request)
        if provider not in self.unresolved:
            return web.Response(status=204)  # Sentry: nothing matched
        self.unresolved.discard(provider)
        return web.json_response({"status": "resolved", "statusDetails": {}})

    def _record(self, request: web.Request, status: int | None) -> None:
        query, project = request.query.get("query", ""), request.query.get("project", "")
        self.calls.append(ApiCall(self._provider(request), query, project, status))
        self._arrived.set()
        self._arrived = anyio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        """Answer one bulk mutation."""
        body = await request.read()
        answer = self._answer(request, body)
        if isinstance(answer, str):
            self._record(request, None)
            await anyio.sleep_forever()
        assert isinstance(answer, web.Response)
        self._record(request, answer.status)
        return answer

    async def wait_for_calls(self, count: int, within: float = 10.0) -> list[ApiCall]:
        """Wait until at least `count` calls have arrived; fail the test after `within` seconds."""
        with anyio.fail_after(within):
            while len(self.calls) < count:
                await self._arrived.wait()
        return self.calls


@asynccontextmanager
async def loopback_sentry_api(api: LoopbackSentryApi | None = None) -> AsyncIterator[LoopbackSentryApi]:
    """Run a LoopbackSentryApi on 127.0.0.1 with a free port."""
    server = api or LoopbackSentryApi()
    app = web.Application()
    app.router.add_put("/api/0/organizations/{org}/issues/", server.handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    server.port = sock.getsockname()[1]
    await web.SockSite(runner, sock).start()
    try:
        yield server
    finally:
        await runner.cleanup()


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return None
