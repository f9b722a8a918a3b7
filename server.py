"""HTTP and WebSocket entry points: each connection becomes a session with its own pipeline."""

import asyncio
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import plotly
import uvicorn
from fastapi import FastAPI, HTTPException, Response, WebSocket
from fastapi.staticfiles import StaticFiles
from loguru import logger
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.request_handler import (
    SmallWebRTCPatchRequest,
    SmallWebRTCRequest,
    SmallWebRTCRequestHandler,
)

from bot.engines.loader import load_engines
from bot.records import SessionRecord
from bot.sessions import SessionManager, session_summary
from bot.settings import Settings, get_settings
from bot.store import SessionStore
from bot.telemetry import Telemetry
from bot.transports.daily import create_daily_transport, create_room, nobody_left
from bot.transports.webrtc import create_webrtc_transport
from bot.transports.websocket import create_websocket_transport

FRONTEND_DIR = Path(__file__).parent / "frontend"
PLOTLY_JS_DIR = Path(plotly.__file__).parent / "package_data"
PRUNE_INTERVAL_SECS = 6 * 3600


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Models load before the server accepts its first connection, so no session ever
        # waits on a cold model.
        engines = await load_engines(settings)
        store = SessionStore(settings.records_path)
        await store.open()
        telemetry = Telemetry(prices=settings.prices)
        app.state.engines, app.state.store, app.state.telemetry = engines, store, telemetry
        app.state.sessions = SessionManager(settings, engines, store=store, telemetry=telemetry)
        app.state.webrtc = SmallWebRTCRequestHandler()
        background = [
            asyncio.create_task(telemetry.sample_resources_forever()),
            asyncio.create_task(_prune_forever(store, settings.retention_days)),
        ]
        yield
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

    @app.get("/health", tags=["operations"])
    async def health() -> dict:
        sessions: SessionManager = app.state.sessions
        return {
            "status": "ok",
            "models": app.state.engines.describe(),
            "model_load_seconds": app.state.engines.load_seconds,
            "active_sessions": len(sessions.active),
            "total_sessions": app.state.telemetry.total_sessions,
        }

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus exposition: sessions, turns, latency per stage, usage, costs, errors."""
        body, content_type = app.state.telemetry.prometheus()
        return Response(body, media_type=content_type)

    @app.get("/api/metrics", tags=["metrics"])
    async def metrics() -> dict:
        """The same figures as /metrics, as JSON with p50/p95/p99 per stage and resources."""
        return app.state.telemetry.snapshot()

    @app.get("/api/sessions", tags=["sessions"])
    async def list_sessions(limit: int = 50, offset: int = 0) -> dict:
        """Active sessions, then recorded ones (newest first)."""
        active = [_session_view(r, full=False) for r in app.state.sessions.active.values()]
        recent = await app.state.store.list_sessions(limit=limit, offset=offset)
        return {"active": active, "recent": recent}

    @app.get("/api/sessions/{session_id}", tags=["sessions"])
    async def get_session(session_id: str) -> dict:
        """One session: state, turns with their metrics and costs, totals."""
        record = app.state.sessions.active.get(session_id) or await app.state.store.get_session(
            session_id
        )
        if record is None:
            raise HTTPException(404, detail=f"no session {session_id!r}")
        return _session_view(record, full=True)

    @app.get("/api/sessions/{session_id}/visualizations", tags=["sessions"])
    async def session_visualizations(session_id: str) -> dict:
        """Every visualization the session showed, newest first, each with its turn id."""
        record = app.state.sessions.active.get(session_id) or await app.state.store.get_session(
            session_id
        )
        if record is None:
            raise HTTPException(404, detail=f"no session {session_id!r}")
        return {"session_id": session_id, "visualizations": list(reversed(record.visualizations))}

    @app.delete("/api/sessions/{session_id}", tags=["sessions"], status_code=204)
    async def delete_session(session_id: str) -> Response:
        """Remove an ended session's record."""
        if session_id in app.state.sessions.active:
            raise HTTPException(409, detail="session is active; it can be deleted once it ends")
        if not await app.state.store.delete_session(session_id):
            raise HTTPException(404, detail=f"no session {session_id!r}")
        return Response(status_code=204)

    @app.websocket("/ws")
    async def websocket_session(websocket: WebSocket):
        await websocket.accept()
        transport = create_websocket_transport(websocket, on_rejected=app.state.telemetry.record_error)
        await app.state.sessions.run(transport, "websocket")

    @app.post("/api/offer", tags=["webrtc"])
    async def webrtc_offer(request: SmallWebRTCRequest):
        async def start(connection: SmallWebRTCConnection):
            app.state.sessions.spawn(create_webrtc_transport(connection), "webrtc")

        return await app.state.webrtc.handle_web_request(request, start)

    @app.post("/api/daily", tags=["daily"])
    async def daily_room() -> dict:
        """Create a Daily room with the bot in it; returns the room URL and the user's token.
        The bot leaves, and its session ends, when the last participant leaves."""
        if settings.daily_api_key is None:
            raise HTTPException(503, detail="Daily is not configured: set DAILY_API_KEY")
        try:
            room = await create_room(settings)
        except Exception as e:  # Daily unreachable or refusing: say so, keep serving
            logger.warning(f"Daily room creation failed: {e}")
            raise HTTPException(502, detail=f"Daily room creation failed: {e}") from e
        transport = create_daily_transport(room, settings)
        app.state.sessions.spawn(
            transport,
            "daily",
            ends_on_disconnect=lambda: nobody_left(transport),
            join_timeout_secs=settings.daily_join_timeout_secs,
        )
        return {"room_url": room.url, "token": room.user_token}

    @app.patch("/api/offer", tags=["webrtc"])
    async def webrtc_ice_candidates(request: SmallWebRTCPatchRequest):
        await app.state.webrtc.handle_patch_request(request)
        return {"status": "success"}

    # Plotly's browser bundle ships inside the Python package: charts work offline.
    app.mount("/vendor", StaticFiles(directory=PLOTLY_JS_DIR), name="vendor")
    app.mount("/", StaticFiles(directory=FRONTEND_DIR, html=True), name="frontend")
    return app


def _session_view(record: SessionRecord, *, full: bool) -> dict:
    view = {
        "session_id": record.session_id,
        "transport": record.transport,
        "state": record.state,
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
            sessions = getattr(self._app.state, "sessions", None)
            if sessions is not None:
                await sessions.drain(self._settings.shutdown_goodbye, self._settings.drain_timeout_secs)
        finally:
            super().handle_exit(sig, frame)


def main() -> None:
    settings = get_settings()
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning(f"Serving on {settings.host}: anyone who reaches it can start sessions")
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info")
    DrainingServer(config, app, settings).run()


if __name__ == "__main__":
    main()
