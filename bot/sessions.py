"""Sessions: one pipeline worker per connected client, tracked from start to end."""

import asyncio
import gc
import time
import uuid
from dataclasses import dataclass, field

from loguru import logger
from pipecat.transports.base_transport import BaseTransport
from pipecat.workers.runner import WorkerRunner

from bot.engines.loader import EmbeddedEngines
from bot.pipeline import build_worker
from bot.settings import Settings


@dataclass
class Session:
    id: str
    transport: str
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    state: str = "starting"

    def summary(self) -> dict:
        return {
            "id": self.id,
            "transport": self.transport,
            "state": self.state,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }


class SessionManager:
    def __init__(self, settings: Settings, engines: EmbeddedEngines):
        self._settings = settings
        self._engines = engines
        self.active: dict[str, Session] = {}
        self.total_started = 0
        self._tasks: set[asyncio.Task] = set()

    async def run(self, transport: BaseTransport, kind: str) -> Session:
        """Run one session's pipeline until the client leaves or the pipeline ends."""
        session = Session(id=uuid.uuid4().hex, transport=kind)
        worker = build_worker(transport, self._settings, self._engines, session_id=session.id)
        runner = WorkerRunner(handle_sigint=False)

        @transport.event_handler("on_client_connected")
        async def connected(_transport, _client):
            session.state = "active"

        @transport.event_handler("on_client_disconnected")
        async def disconnected(_transport, _client):
            session.state = "ending"
            await worker.cancel()

        self.active[session.id] = session
        self.total_started += 1
        logger.info(f"Session {session.id} started over {kind}")
        try:
            await runner.add_workers(worker)
            await runner.run()
        finally:
            session.state, session.ended_at = "ended", time.time()
            self.active.pop(session.id, None)
            logger.info(f"Session {session.id} ended after {session.ended_at - session.started_at:.1f}s")
            # A finished pipeline's objects sit in reference cycles; collect them now rather
            # than let every ended session's buffers pile up until the next GC generation.
            del worker, runner
            gc.collect()
        return session

    def spawn(self, transport: BaseTransport, kind: str) -> None:
        """Run a session in the background (transports whose handshake returns first)."""
        task = asyncio.create_task(self.run(transport, kind))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
