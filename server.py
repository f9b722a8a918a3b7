"""HTTP and WebSocket entry points: each connection becomes a session with its own pipeline."""

import bot.logs  # noqa: F401  (first: the log level applies before Pipecat's imports log)

# isort: split

import asyncio
import gc
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import plotly
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response, WebSocket
from fastapi.staticfiles import StaticFiles
from loguru import logger
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.request_handler import (
    SmallWebRTCPatchRequest,
    SmallWebRTCRequest,
    SmallWebRTCRequestHandler,
)
from pydantic import TypeAdapter, ValidationError

from bot import tools
from bot.auth import Auth, redact_tokens_in_server_log, warn_if_exposed
from bot.limits import ClientAllowance, LoopLoad, SessionSlots
from bot.providers import load_engines
from bot.providers.daily import create_daily_transport, create_room, delete_room, nobody_left
from bot.records import SessionRecord
from bot.request_guards import AllowedHosts, AllowedMethods, BodySizeLimit, allowed_hosts
from bot.sessions import SessionManager, session_summary
from bot.settings import Settings, get_settings, settings_or_exit
from bot.store import SchemaTooNewError, SessionStore, create_store
from bot.telemetry import Telemetry
from bot.transports.serializer import MAX_FRAME_BYTES, encoded_rtvi_error
from bot.transports.webrtc import check_data_channel, create_webrtc_transport, disconnect_peer
from bot.transports.websocket import create_websocket_transport
from bot.turn_models import load_turn_models

FRONTEND_DIR = Path(__file__).parent / "frontend"
PLOTLY_JS_DIR = Path(plotly.__file__).parent / "package_data"
PRUNE_INTERVAL_SECS = 6 * 3600
# WebSocket close codes: 1013 "try again later" is the standard one for a full server; the
# 4000s are the application's own.
CLOSE_UNAUTHORIZED = 4001
CLOSE_FORBIDDEN_ORIGIN = 4003
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_POLICY_VIOLATION = 1008  # sustained abuse (bot/limits.py ClientAllowance)
SHUTTING_DOWN = "the server is shutting down; try again later"
MAX_PAGE = 500  # sessions listed per request
MAX_OFFSET = 10**9  # far past any store, well inside SQLite's integers


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    auth = Auth(settings)
    loop_load = LoopLoad()
    slots = SessionSlots(
        settings.max_sessions,
        load=loop_load,
        max_busy=settings.max_loop_busy,
        max_late_secs=settings.max_loop_lag_ms / 1000,
    )
    # Every /api route checks the browser Origin; all but the session-opening ones need the key.
    # The key is a dependency (and so declared in /openapi.json) only when one is set. Every
    # route may answer what the guards in front of all of them answer.
    guarded = {
        400: {"description": "The Host is not served here (AGENT_ALLOWED_HOSTS)."},
        403: {"description": "The browser Origin is not allowed (AGENT_ALLOWED_ORIGINS)."},
        413: {"description": "The request body exceeds AGENT_MAX_BODY_BYTES."},
    }
    keyed = {401: {"description": "Missing or wrong API key."}} if auth.required else {}
    keyed_api = APIRouter(
        prefix="/api",
        dependencies=[Depends(auth.require_origin), *([Depends(auth.require_key)] if auth.required else [])],
        responses={**guarded, **keyed},
    )
    session_api = APIRouter(prefix="/api", dependencies=[Depends(auth.require_origin)], responses=guarded)
    not_found = {404: {"description": "No such session."}}
    full = {503: {"description": "The server is full, overloaded or draining; try again later."}}

    def take_slot() -> None:
        """Count one more session, or answer 503 when the server is full or overloaded."""
        if problem := slots.acquire():
            app.state.telemetry.record_error("session_limit")
            raise HTTPException(503, detail=problem, headers={"Retry-After": "30"})

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        telemetry = Telemetry(prices=settings.prices)
        store = create_store(
            settings.records_path,
            spool_writes=settings.store_spool_writes,
            on_error=telemetry.record_error,
            server_id=settings.server_name,
        )
        # Before the models load: records this release cannot read stop the start at once, the
        # reason in one log line.
        try:
            await store.open()
        except SchemaTooNewError as e:
            logger.error(f"Cannot start: {e}")
            raise SystemExit(2) from None
        # Models load before the server accepts its first connection, so no session ever
        # waits on a cold model.
        engines = await load_engines(settings)
        await asyncio.to_thread(load_turn_models, settings)
        await asyncio.to_thread(tools.warm_up)
        if crashed := await store.close_crashed_sessions():
            logger.warning(f"Closed {crashed} session(s) this server left unfinished as crashed")
        app.state.engines, app.state.store, app.state.telemetry = engines, store, telemetry
        app.state.sessions = SessionManager(settings, engines, store=store, telemetry=telemetry)
        app.state.webrtc = SmallWebRTCRequestHandler()
        background = [
            asyncio.create_task(telemetry.sample_resources_forever()),
            asyncio.create_task(_prune_forever(store, settings.retention_days)),
            asyncio.create_task(loop_load.run()),
        ]
        # What is loaded by now lives as long as the process. Out of the collector's sight, a
        # full collection no longer walks it: under load those walks paused the event loop
        # for 140-190 ms, the worst lateness every session's audio saw.
        gc.freeze()
        yield
        slots.stop_admitting(SHUTTING_DOWN)
        await app.state.sessions.drain(settings.shutdown_goodbye, settings.drain_timeout_secs)
        await app.state.webrtc.close()
        await app.state.sessions.shutdown()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await store.close()

    app = FastAPI(
        title="Voice agent",
        description="Real-time voice agent: sessions over /ws and /api/offer, records and metrics.",
        lifespan=lifespan,
    )

    app.state.slots = slots
    app.state.room_deletions = set()  # Daily rooms being deleted after their sessions

    @app.get("/health", tags=["operations"], responses={**guarded, 503: {"description": "The server is draining."}})
    async def health(response: Response) -> dict:
        """ "ok", or "draining" with 503 once the server is stopping (no new sessions)."""
        sessions: SessionManager = app.state.sessions
        if slots.refusing is not None:
            response.status_code = 503
        return {
            "status": "ok" if slots.refusing is None else "draining",
            "models": app.state.engines.describe(),
            "model_load_seconds": app.state.engines.load_seconds,
            "active_sessions": len(sessions.active),
            "loop_busy": round(loop_load.busy(), 3),
            "loop_lag_ms": round(1000 * loop_load.late(), 1),
            "auth_required": auth.required,
            "total_sessions": app.state.telemetry.total_sessions,
        }

    metrics_keyed = auth.required and not settings.metrics_public

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,
        dependencies=[Depends(auth.require_key)] if metrics_keyed else [],
        responses={**guarded, **(keyed if metrics_keyed else {})},
    )
    async def prometheus_metrics() -> Response:
        """Prometheus exposition: sessions, turns, latency per stage, usage, costs, errors."""
        body, content_type = app.state.telemetry.prometheus()
        return Response(body, media_type=content_type)

    @keyed_api.get("/metrics", tags=["metrics"])
    async def metrics() -> dict:
        """The same figures as /metrics, as JSON with p50/p95/p99 per stage and resources."""
        return app.state.telemetry.snapshot()

    @keyed_api.get("/sessions", tags=["sessions"])
    async def list_sessions(
        limit: int = Query(50, ge=1, le=MAX_PAGE), offset: int = Query(0, ge=0, le=MAX_OFFSET)
    ) -> dict:
        """Active sessions, then recorded ones (newest first)."""
        active = [_session_view(r, full=False) for r in app.state.sessions.active.values()]
        recent = await app.state.store.list_sessions(limit=limit, offset=offset)
        return {"active": active, "recent": recent}

    @keyed_api.get("/sessions/{session_id}", tags=["sessions"], responses=not_found)
    async def get_session(session_id: str) -> dict:
        """One session: state, turns with their metrics and costs, totals."""
        record = app.state.sessions.active.get(session_id) or await app.state.store.get_session(session_id)
        if record is None:
            raise HTTPException(404, detail=f"no session {session_id!r}")
        return _session_view(record, full=True)

    @keyed_api.get("/sessions/{session_id}/visualizations", tags=["sessions"], responses=not_found)
    async def session_visualizations(session_id: str) -> dict:
        """Every visualization the session showed, newest first, each with its turn id."""
        record = app.state.sessions.active.get(session_id) or await app.state.store.get_session(session_id)
        if record is None:
            raise HTTPException(404, detail=f"no session {session_id!r}")
        return {"session_id": session_id, "visualizations": list(reversed(record.visualizations))}

    @keyed_api.delete(
        "/sessions/{session_id}",
        tags=["sessions"],
        status_code=204,
        responses={**not_found, 409: {"description": "The session is still active."}},
    )
    async def delete_session(session_id: str) -> Response:
        """Remove an ended session's record."""
        if session_id in app.state.sessions.active:
            raise HTTPException(409, detail="session is active; it can be deleted once it ends")
        if not await app.state.store.delete_session(session_id):
            raise HTTPException(404, detail=f"no session {session_id!r}")
        return Response(status_code=204)

    @keyed_api.post("/tokens", tags=["auth"])
    async def session_token() -> dict:
        """A short-lived one-use token for `/ws?token=` or `POST /api/offer?token=`, in
        exchange for the API key as a bearer header; `token` is null when no key is set."""
        if not auth.required:
            return {"token": None, "expires_in": None, "auth_required": False}
        return {"token": auth.tokens.issue(), "expires_in": auth.tokens.ttl_secs, "auth_required": True}

    async def refuse(websocket: WebSocket, problem: str, code: int) -> None:
        """Tell the client why in an RTVI error, then close with a code that says it too."""
        logger.info(f"WebSocket refused ({code}): {problem}")
        with suppress(Exception):  # the client may already be gone
            await websocket.send_bytes(await encoded_rtvi_error(problem, fatal=True))
            await websocket.close(code, reason=problem[:120])

    @app.websocket("/ws")
    async def websocket_session(websocket: WebSocket, token: str | None = None):
        # Accepted first, so a refused browser learns why from the close code and reason
        # (a handshake refused before acceptance reaches it as a bare failure).
        await websocket.accept()
        if problem := auth.origin_problem(websocket.headers):
            return await refuse(websocket, problem, CLOSE_FORBIDDEN_ORIGIN)
        if problem := auth.token_problem(token):
            return await refuse(websocket, problem, CLOSE_UNAUTHORIZED)
        if problem := slots.acquire():
            app.state.telemetry.record_error("session_limit")
            return await refuse(websocket, problem, CLOSE_TRY_AGAIN_LATER)
        allowance = ClientAllowance(settings)
        allowance.disconnect = lambda reason: refuse(websocket, reason, CLOSE_POLICY_VIOLATION)
        try:
            transport = create_websocket_transport(
                websocket, on_rejected=app.state.telemetry.record_error, allowance=allowance
            )
            await app.state.sessions.run(transport, "websocket", allowance=allowance)
        finally:
            slots.release()

    def spawn_counted(transport, kind: str, on_end=lambda: None, **options) -> None:
        """Run a session in the background; its slot is freed when it ends."""

        def ended(_task) -> None:
            slots.release()
            on_end()

        app.state.sessions.spawn(transport, kind, **options).add_done_callback(ended)

    @session_api.post(
        "/offer",
        tags=["webrtc"],
        responses={
            400: {"description": "Not a usable SDP offer, or a Host not served here."},
            401: {"description": "A missing, invalid, expired or spent session token."},
            **full,
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _offer_schema()}},
            }
        },
    )
    async def webrtc_offer(http_request: Request, token: str | None = None):
        """SDP offer -> answer. With an API key set it needs a token from POST /api/tokens,
        checked before the body is read."""
        if problem := auth.token_problem(token):
            raise HTTPException(401, detail=problem)
        request = await _offer_from(http_request)
        take_slot()
        started: list[str] = []

        async def start(connection: SmallWebRTCConnection):
            pc_id = connection.pc_id
            check_data_channel(connection, on_rejected=app.state.telemetry.record_error)
            allowance = ClientAllowance(settings)
            allowance.disconnect = lambda reason: disconnect_peer(connection, reason)
            spawn_counted(
                create_webrtc_transport(connection),
                "webrtc",
                lambda: auth.forget_peer(pc_id),
                allowance=allowance,
            )
            started.append(pc_id)

        try:
            answer = await app.state.webrtc.handle_web_request(request, start)
        except SDP_PARSE_ERRORS as e:  # aiortc's parser on an SDP it cannot use
            raise HTTPException(
                400, detail=f"the SDP offer cannot be used: {str(e)[:200] or type(e).__name__}"
            ) from None
        finally:
            if not started:  # a renegotiation, or a failed offer: no new session
                slots.release()
        auth.allow_peer(answer["pc_id"])
        return answer

    @keyed_api.post(
        "/daily",
        tags=["daily"],
        # Described only where it works: without a Daily key it answers 503 and says so.
        include_in_schema=settings.daily_api_key is not None,
        responses={502: {"description": "Daily refused or could not be reached."}, **full},
    )
    async def daily_room() -> dict:
        """Create a Daily room with the bot in it; returns the room URL and the user's token.
        The bot leaves, and its session ends, when the last participant leaves."""
        if settings.daily_api_key is None:
            raise HTTPException(503, detail="Daily is not configured: set DAILY_API_KEY")
        take_slot()  # before the room exists: a full server makes no orphaned room
        try:
            room = await create_room(settings)
        except Exception as e:  # Daily unreachable or refusing: say so, keep serving
            slots.release()
            logger.warning(f"Daily room creation failed: {e}")
            raise HTTPException(502, detail=f"Daily room creation failed: {e}") from e
        transport = create_daily_transport(room, settings)

        def ended() -> None:
            app.state.room_deletions.add(deletion := asyncio.create_task(delete_room(settings, room)))
            deletion.add_done_callback(app.state.room_deletions.discard)

        spawn_counted(
            transport,
            "daily",
            ended,
            ends_on_disconnect=lambda: nobody_left(transport),
            join_timeout_secs=settings.daily_join_timeout_secs,
        )
        return {"room_url": room.url, "token": room.user_token}

    @session_api.patch(
        "/offer",
        tags=["webrtc"],
        responses={
            401: {"description": "A peer connection no token opened."},
            404: {"description": "No such peer connection."},
        },
    )
    async def webrtc_ice_candidates(request: SmallWebRTCPatchRequest):
        """ICE candidates for a peer connection; allowed for the pc_id a token opened."""
        if not auth.peer_allowed(request.pc_id):
            raise HTTPException(401, detail=f"unknown peer connection {request.pc_id!r}")
        await app.state.webrtc.handle_patch_request(request)
        return {"status": "success"}

    # Every request and handshake meets these before any route: the Host first (outermost,
    # added last), then the body's size.
    app.add_middleware(AllowedMethods, routes=app.routes)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(AllowedHosts, hosts=allowed_hosts(settings.host, settings.allowed_hosts))
    app.include_router(keyed_api)
    app.include_router(session_api)

    # Plotly's browser bundle ships inside the Python package: charts work offline.
    app.mount("/vendor", StaticFiles(directory=PLOTLY_JS_DIR), name="vendor")
    app.mount("/", StaticFiles(directory=FRONTEND_DIR, html=True), name="frontend")
    return app


OFFER_ADAPTER = TypeAdapter(SmallWebRTCRequest)


def _offer_schema() -> dict:
    """Pipecat's request as JSON Schema, with what this server checks of it stated: an offer
    (never an answer) whose SDP starts with v=0 and has media lines."""
    schema = OFFER_ADAPTER.json_schema()
    schema["properties"]["type"] = {"const": "offer", "title": "Type"}
    schema["properties"]["sdp"] = {"type": "string", "pattern": r"^v=0[\s\S]*\nm=", "title": "Sdp"}
    return schema


# What aiortc's SDP parser raises on an offer it cannot read (an AssertionError on an empty
# media line, a ValueError on missing ICE credentials, ...).
SDP_PARSE_ERRORS = (ValueError, AssertionError, IndexError, KeyError, TypeError)


async def _offer_from(request: Request) -> SmallWebRTCRequest:
    """The SDP offer in the request body: 422 when it is not the documented JSON, 400 when it
    is no usable offer (aiortc would raise deep inside Pipecat's handler)."""
    try:
        offer = OFFER_ADAPTER.validate_json(await request.body())
    except ValidationError as e:
        problems = [{"loc": list(p["loc"]), "msg": p["msg"], "type": p["type"]} for p in e.errors()]
        raise HTTPException(422, detail=problems) from None
    if offer.type != "offer":
        raise HTTPException(400, detail=f"type must be 'offer', not {offer.type[:40]!r}")
    if not offer.sdp.startswith("v=0") or "\nm=" not in offer.sdp:
        raise HTTPException(400, detail="sdp is not an SDP offer (it starts with v=0 and has media lines)")
    return offer


def _session_view(record: SessionRecord, *, full: bool) -> dict:
    view = {
        "session_id": record.session_id,
        "transport": record.transport,
        "state": record.state,
        "end_reason": record.end_reason,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "history_length": len(record.turns),
        "tool_calls": sum(len(t.tool_calls) for t in record.turns),
        "totals": session_summary(record),
    }
    if full:
        view |= {
            "providers": record.providers,
            "resources": record.resources,
            "turns": [t.model_dump(mode="json") for t in record.turns],
            "visualizations": record.visualizations,
        }
    return view


async def _prune_forever(store: SessionStore, retention_days: float) -> None:
    while True:
        with suppress(Exception):
            if pruned := await store.prune(retention_days):
                logger.info(f"Pruned {pruned} session record(s) older than {retention_days} days")
        await asyncio.sleep(PRUNE_INTERVAL_SECS)


class DrainingServer(uvicorn.Server):
    """Uvicorn closes WebSockets as soon as it starts shutting down; on the first SIGTERM or
    SIGINT the sessions are drained first (goodbye spoken, records flushed), then uvicorn
    shuts down as usual. A second signal stops at once."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, settings: Settings):
        super().__init__(config)
        self._app, self._settings = app, settings
        self._draining = False

    def handle_exit(self, sig, frame) -> None:
        if self._draining:
            return super().handle_exit(sig, frame)
        self._draining = True
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(lambda: loop.create_task(self._drain_then_exit(sig, frame)))

    async def _drain_then_exit(self, sig, frame) -> None:
        try:
            if slots := getattr(self._app.state, "slots", None):
                slots.stop_admitting(SHUTTING_DOWN)
            sessions = getattr(self._app.state, "sessions", None)
            if sessions is not None:
                await sessions.drain(self._settings.shutdown_goodbye, self._settings.drain_timeout_secs)
        finally:
            super().handle_exit(sig, frame)


def main() -> None:
    settings = settings_or_exit()
    warn_if_exposed(settings)
    app = create_app(settings)
    # Oversized WebSocket messages are refused by the protocol layer, before they are
    # buffered whole: the connection closes with 1009 (message too big).
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        ws_max_size=MAX_FRAME_BYTES,
        # Compressing PCM audio costs the server CPU on every frame and saves almost nothing.
        ws_per_message_deflate=False,
    )
    redact_tokens_in_server_log()  # after uvicorn.Config, which configures its loggers
    DrainingServer(config, app, settings).run()


if __name__ == "__main__":
    main()
