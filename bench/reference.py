"""The reference server: bare aiohttp that reads the body, json-parses it and answers 202.

It is what alertd's single-event ingest is compared with: the same framework on the same kind of event
loop, doing only the work no ingest endpoint can skip. Run as `python bench/reference.py PORT [LOOP]`,
LOOP being `asyncio` (default) or `uvloop`; it prints `ready` once it listens.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys

from aiohttp import web


async def post_failures(request: web.Request) -> web.Response:
    body = await request.read()
    decoded = json.loads(body)
    accepted = len(decoded) if isinstance(decoded, list) else 1
    return web.json_response({"accepted": accepted}, status=202)


async def get_readyz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ready"})


async def serve(port: int) -> None:
    app = web.Application(client_max_size=1_048_576)
    app.router.add_post("/v1/failures", post_failures)
    app.router.add_get("/readyz", get_readyz)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", port), backlog=1024)
    await web.SockSite(runner, sock).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    port = int(sys.argv[1])
    loop = sys.argv[2] if len(sys.argv) > 2 else "asyncio"
    if loop == "uvloop":
        import uvloop  # noqa: PLC0415 - optional, only when asked for

        uvloop.run(serve(port))
    else:
        asyncio.run(serve(port))


if __name__ == "__main__":
    main()
