"""HTTP and WebSocket entry points: each connection becomes a session with its own pipeline."""

from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI, WebSocket
from fastapi.staticfiles import StaticFiles
from loguru import logger
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.request_handler import (
    SmallWebRTCPatchRequest,
    SmallWebRTCRequest,
    SmallWebRTCRequestHandler,
)

from bot.engines.loader import load_engines
from bot.sessions import SessionManager
from bot.settings import Settings, get_settings
from bot.transports.webrtc import create_webrtc_transport
from bot.transports.websocket import create_websocket_transport

FRONTEND_DIR = Path(__file__).parent / "frontend"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Models load before the server accepts its first connection, so no session ever
        # waits on a cold model.
        engines = await load_engines(settings)
        app.state.engines = engines
        app.state.sessions = SessionManager(settings, engines)
        app.state.webrtc = SmallWebRTCRequestHandler()
        yield
        await app.state.webrtc.close()
        await app.state.sessions.shutdown()

    app = FastAPI(title="Voice agent", lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict:
        sessions: SessionManager = app.state.sessions
        return {
            "status": "ok",
            "models": app.state.engines.describe(),
            "model_load_seconds": app.state.engines.load_seconds,
            "active_sessions": len(sessions.active),
            "total_sessions": sessions.total_started,
        }

    @app.websocket("/ws")
    async def websocket_session(websocket: WebSocket):
        await websocket.accept()
        await app.state.sessions.run(create_websocket_transport(websocket), "websocket")

    @app.post("/api/offer")
    async def webrtc_offer(request: SmallWebRTCRequest):
        async def start(connection: SmallWebRTCConnection):
            app.state.sessions.spawn(create_webrtc_transport(connection), "webrtc")

        return await app.state.webrtc.handle_web_request(request, start)

    @app.patch("/api/offer")
    async def webrtc_ice_candidates(request: SmallWebRTCPatchRequest):
        await app.state.webrtc.handle_patch_request(request)
        return {"status": "success"}

    app.mount("/", StaticFiles(directory=FRONTEND_DIR, html=True), name="frontend")
    return app


def main() -> None:
    settings = get_settings()
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning(f"Serving on {settings.host}: anyone who reaches it can start sessions")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
