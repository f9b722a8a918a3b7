"""Checks every HTTP request and WebSocket handshake meets before any route sees it.

`AllowedHosts`: only the host names the server is meant to answer to (AGENT_ALLOWED_HOSTS).
A page on another site whose name has been re-pointed at 127.0.0.1 (DNS rebinding) sends its
own name as `Host`, and its `Origin` matches it: the origin check alone would let it in.

`AllowedMethods`: a request for an API path in a method none of its routes takes gets 405
with every method the path does take in `Allow` (Starlette's router names only the first
route's, and the page's files, mounted at "/", would answer for every other path).

`BodySizeLimit`: a body whose Content-Length is over the cap is answered 413 unread; one
streamed without a length is counted as it arrives and refused the moment it passes the cap,
so no route ever buffers more than `max_bytes` (AGENT_MAX_BODY_BYTES).
"""

import json

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.pipecat_internals import parse_host_header

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
ANY_ADDRESS = ("0.0.0.0", "::", "")


def allowed_hosts(host: str, extra: list[str]) -> set[str]:
    """The loopback names, the bound address when it is a concrete one, and `extra`."""
    hosts = {*LOOPBACK_HOSTS, *(h.lower() for h in extra)}
    if host not in ANY_ADDRESS:
        hosts.add(host.lower())
    return hosts


class AllowedHosts:
    def __init__(self, app: ASGIApp, hosts: set[str]):
        self.app, self.hosts = app, hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and "*" not in self.hosts:
            raw = Headers(scope=scope).get("host")
            parsed = parse_host_header(raw) if raw else None
            host = parsed.host.lower() if parsed else ""
            if host not in self.hosts:
                detail = (
                    f"host {host[:100]!r} is not served here; list it in AGENT_ALLOWED_HOSTS"
                    if host
                    else "a Host header is required"
                )
                # On a WebSocket this is the handshake's HTTP denial response.
                return await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)
        await self.app(scope, receive, send)


def too_large(max_bytes: int) -> str:
    return f"request body exceeds the {max_bytes}-byte limit (AGENT_MAX_BODY_BYTES)"


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Inside the route, where FastAPI answers it as a 413.
                    raise HTTPException(413, detail=too_large(self.max_bytes))
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": too_large(self.max_bytes)}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class AllowedMethods:
    METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]):
        self.app, self.routes = app, routes

    def allowed(self, scope: Scope) -> set[str]:
        """The methods some route (not a mount of files) takes for this path."""
        return {
            method
            for route in self.routes
            if not isinstance(route, Mount)
            for method in self.METHODS
            if route.matches({**scope, "method": method})[0] == Match.FULL
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            allowed = self.allowed(scope)
            if allowed and scope["method"] not in allowed:
                path, method = scope["path"], scope["method"]
                detail = f"{method} is not allowed on {path[:100]}; use {', '.join(sorted(allowed))}"
                headers = {"Allow": ", ".join(sorted(allowed))}
                return await JSONResponse({"detail": detail}, 405, headers=headers)(scope, receive, send)
        await self.app(scope, receive, send)
