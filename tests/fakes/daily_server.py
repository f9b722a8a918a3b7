"""A fake of Daily's REST API on loopback, for contract tests of `POST /api/daily`.

It implements the endpoints Pipecat's `DailyRESTHelper`
(`pipecat/transports/daily/utils.py`) calls, with the request and response shapes of the
Daily REST API reference (https://docs.daily.co/reference/rest-api):

- "Create room"          `POST   /rooms`           (reference/rest-api/rooms/create-room)
- "Get room config"      `GET    /rooms/:name`     (reference/rest-api/rooms/get-room-config)
- "Delete room"          `DELETE /rooms/:name`     (reference/rest-api/rooms/delete-room)
- "Create meeting token" `POST   /meeting-tokens`  (reference/rest-api/meeting-tokens/create-meeting-token)

Every request must carry `Authorization: Bearer <api key>` (reference: "Authentication");
errors are answered the way Daily answers them: a status and `{"error": <type>, "info":
<text>}` (reference: "Errors": 400 `invalid-request-error`, 401 `authentication-error`, 404
`not-found`, 5xx `server-error`). Every request is recorded, authorized or not, in
`FakeDaily.requests`. A test makes an endpoint fail with `FakeDaily.fail(...)`.

The server runs on its own event loop in a daemon thread, so it serves whatever loop (or
none) the test runs on, and a subprocess under test can reach it on `FakeDaily.api_url`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

# Daily room names: letters, digits, '-' and '_', at most 128 characters (reference: "Create
# room", body param `name`).
ROOM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
PRIVACY = ("public", "private")
ENDPOINTS = ("create_room", "get_room", "delete_room", "create_token")
JSON_BODY = web.RequestKey("json_body", object)  # the parsed body, set by the middleware


@dataclass
class RecordedRequest:
    endpoint: str  # one of ENDPOINTS, or "unknown"
    method: str
    path: str
    authorization: str | None
    body: Any  # parsed JSON, the raw text when it is not JSON, None when empty
    status: int = 0  # what the fake answered
    at: float = field(default_factory=time.time)

    @property
    def bearer_key(self) -> str | None:
        if self.authorization and self.authorization.startswith("Bearer "):
            return self.authorization[len("Bearer ") :]
        return None


@dataclass
class _Failure:
    status: int
    times: int | None  # None: every time
    body: dict


class FakeDaily:
    """`with FakeDaily(api_key="k") as daily: ...` or `start()` / `stop()`."""

    def __init__(self, api_key: str = "test-key", domain: str = "fake.daily.co"):
        self.api_key = api_key
        self.domain = domain
        self.requests: list[RecordedRequest] = []
        self.rooms: dict[str, dict] = {}
        self.tokens: dict[str, dict] = {}  # token -> its properties
        self._failures: dict[str, _Failure] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # -- control, from the test ---------------------------------------------------------

    @property
    def api_url(self) -> str:
        """The base URL to give as `daily_api_url` (Daily's is https://api.daily.co/v1)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def fail(self, endpoint: str, status: int = 500, *, times: int | None = None, body: dict | None = None):
        """Answer `endpoint` with `status` (`times` times, or until `clear_failures`)."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {ENDPOINTS}")
        error = "server-error" if status >= 500 else "invalid-request-error"
        with self._lock:
            self._failures[endpoint] = _Failure(
                status, times, body or {"error": error, "info": f"fake failure {status}"}
            )

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def reset(self) -> None:
        """Forget requests, rooms, tokens and failures."""
        with self._lock:
            self.requests.clear()
            self.rooms.clear()
            self.tokens.clear()
            self._failures.clear()

    def requests_to(self, endpoint: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.endpoint == endpoint]

    def start(self) -> FakeDaily:
        started = threading.Event()
        errors: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start_site())
            except BaseException as e:  # reported to start()
                errors.append(e)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="fake-daily", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("fake Daily server did not start within 10 s")
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> FakeDaily:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- server ---------------------------------------------------------------------------

    async def _start_site(self) -> None:
        app = web.Application(middlewares=[self._record_and_authorize])
        app.router.add_post("/v1/rooms", self._create_room)
        app.router.add_get("/v1/rooms/{name}", self._get_room)
        app.router.add_delete("/v1/rooms/{name}", self._delete_room)
        app.router.add_post("/v1/meeting-tokens", self._create_token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    @staticmethod
    def _endpoint(request: web.Request) -> str:
        path, method = request.path, request.method
        if path == "/v1/rooms" and method == "POST":
            return "create_room"
        if path.startswith("/v1/rooms/") and method == "GET":
            return "get_room"
        if path.startswith("/v1/rooms/") and method == "DELETE":
            return "delete_room"
        if path == "/v1/meeting-tokens" and method == "POST":
            return "create_token"
        return "unknown"

    @web.middleware
    async def _record_and_authorize(self, request: web.Request, handler) -> web.StreamResponse:
        text = await request.text()
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = text
        record = RecordedRequest(
            endpoint=self._endpoint(request),
            method=request.method,
            path=request.path,
            authorization=request.headers.get("Authorization"),
            body=body,
        )
        request[JSON_BODY] = body
        authorized = record.bearer_key == self.api_key
        with self._lock:
            self.requests.append(record)
            failure = self._failures.get(record.endpoint) if authorized else None
            if failure is not None and failure.times is not None:
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.pop(record.endpoint)
        # Reference "Authentication": `Authorization: Bearer $API_KEY` on every request.
        if not authorized:
            response = _error(401, "authentication-error", "authorization header missing or invalid")
        elif failure is not None:
            response = web.json_response(failure.body, status=failure.status)
        else:
            try:
                response = await handler(request)
            except web.HTTPException as e:
                response = _error(e.status, "not-found" if e.status == 404 else "invalid-request-error", e.reason)
        record.status = response.status
        return response

    async def _create_room(self, request: web.Request) -> web.Response:
        """Daily REST API reference, "Create room", `POST /rooms`.

        Body (all optional): `name` (string), `privacy` ("public" | "private", default
        "public"), `properties` (object; `exp`: Unix timestamp in seconds, when the room
        expires). Answers the room object: `id`, `name`, `api_created`, `privacy`, `url`,
        `created_at` (ISO 8601), `config` (the properties that were set)."""
        body = request[JSON_BODY] if request[JSON_BODY] is not None else {}
        if not isinstance(body, dict):
            return _error(400, "invalid-request-error", "body must be a JSON object")
        unknown = set(body) - {"name", "privacy", "properties"}
        if unknown:
            return _error(400, "invalid-request-error", f"unknown parameter(s) {sorted(unknown)}")
        name = body.get("name")
        if name is None:
            name = uuid.uuid4().hex[:20]
        elif not isinstance(name, str) or not ROOM_NAME.match(name):
            return _error(400, "invalid-request-error", f"invalid room name {name!r}")
        if name in self.rooms:
            return _error(400, "invalid-request-error", f"a room named {name} already exists")
        privacy = body.get("privacy", "public")
        if privacy not in PRIVACY:
            return _error(400, "invalid-request-error", f"privacy must be one of {PRIVACY}")
        properties = body.get("properties", {})
        if not isinstance(properties, dict):
            return _error(400, "invalid-request-error", "properties must be an object")
        if "exp" in properties:
            exp = properties["exp"]
            if isinstance(exp, bool) or not isinstance(exp, (int, float)):
                return _error(400, "invalid-request-error", "exp must be a Unix timestamp (number)")
            if exp <= time.time():
                return _error(400, "invalid-request-error", "exp must be in the future")
        room = {
            "id": str(uuid.uuid4()),
            "name": name,
            "api_created": True,
            "privacy": privacy,
            "url": f"https://{self.domain}/{name}",
            "created_at": _iso_now(),
            "config": properties,
        }
        with self._lock:
            self.rooms[name] = room
        return web.json_response(room)

    async def _get_room(self, request: web.Request) -> web.Response:
        """Daily REST API reference, "Get room config", `GET /rooms/:name`: the room object,
        404 `not-found` for an unknown (or deleted) room."""
        name = request.match_info["name"]
        room = self.rooms.get(name)
        if room is None:
            return _error(404, "not-found", f"room {name} not found")
        return web.json_response(room)

    async def _delete_room(self, request: web.Request) -> web.Response:
        """Daily REST API reference, "Delete room", `DELETE /rooms/:name`: answers
        `{"deleted": true, "name": ...}`, 404 `not-found` for an unknown room."""
        name = request.match_info["name"]
        with self._lock:
            room = self.rooms.pop(name, None)
        if room is None:
            return _error(404, "not-found", f"room {name} not found")
        return web.json_response({"deleted": True, "name": name})

    async def _create_token(self, request: web.Request) -> web.Response:
        """Daily REST API reference, "Create meeting token", `POST /meeting-tokens`.

        Body: `{"properties": {...}}`; the properties checked here are `room_name` (a room
        that exists), `exp` (integer Unix timestamp in the future), `is_owner` (boolean) and
        `eject_at_token_exp` (boolean). Answers `{"token": "<JWT>"}`; the fake's token is a
        JWT-shaped string whose payload is the properties (unsigned)."""
        body = request[JSON_BODY]
        if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
            return _error(400, "invalid-request-error", 'body must be {"properties": {...}}')
        props = body["properties"]
        room_name = props.get("room_name")
        if not isinstance(room_name, str) or room_name not in self.rooms:
            return _error(400, "invalid-request-error", f"room_name {room_name!r} is not a room")
        exp = props.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, int):
            return _error(400, "invalid-request-error", "exp must be an integer Unix timestamp")
        if exp <= time.time():
            return _error(400, "invalid-request-error", "exp must be in the future")
        for flag in ("is_owner", "eject_at_token_exp"):
            if flag in props and not isinstance(props[flag], bool):
                return _error(400, "invalid-request-error", f"{flag} must be a boolean")
        token = ".".join(
            _b64(part)
            for part in (
                {"alg": "none", "typ": "JWT"},
                {**props, "jti": uuid.uuid4().hex},
                "fake-signature",
            )
        )
        with self._lock:
            self.tokens[token] = props
        return web.json_response({"token": token})


def _error(status: int, error: str, info: str) -> web.Response:
    """Daily's error body (reference: "Errors")."""
    return web.json_response({"error": error, "info": info}, status=status)


def _iso_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _b64(value: Any) -> str:
    raw = value.encode() if isinstance(value, str) else json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
