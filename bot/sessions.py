"""Sessions: one pipeline worker per connected client, and the record it leaves behind.

Each finished turn is priced, written to the store, counted in the process telemetry and
pushed to the client as an RTVI `server-message` of type `turn-metrics`, in that order, so a
turn the client saw is a turn that was kept.
"""

import asyncio
import gc
import time
import uuid
from collections.abc import Callable

from loguru import logger
from pipecat.frames.frames import EndFrame, TTSSpeakFrame
from pipecat.pipeline.worker import PipelineWorker
from pipecat.transports.base_transport import BaseTransport
from pipecat.workers.runner import WorkerRunner

from bot.limits import ClientAllowance, SessionDeadlines
from bot.percentiles import percentile
from bot.pipeline import build_worker
from bot.providers import EmbeddedEngines, describe_providers, price_turn
from bot.records import SessionRecord, TurnRecord
from bot.session_resources import SessionResources
from bot.settings import Settings
from bot.store import SessionStore
from bot.telemetry import Telemetry


def session_summary(record: SessionRecord) -> dict:
    """The running totals shown beside each turn's metrics."""
    cost = sum(turn.cost.total for turn in record.turns)
    minutes = record.duration_secs / 60
    totals = [t.latency.total for t in record.turns if t.latency and t.latency.total is not None]
    return {
        "turns": len(record.turns),
        "cost_total": cost,
        "cost_per_minute": cost / minutes if minutes > 0 else 0.0,
        "conversation_seconds": record.duration_secs,
        "latency_p50": percentile(totals, 50),
        "latency_p95": percentile(totals, 95),
    }


class SessionManager:
    def __init__(
        self,
        settings: Settings,
        engines: EmbeddedEngines,
        *,
        store: SessionStore,
        telemetry: Telemetry,
    ):
        self._settings = settings
        self._engines = engines
        self._store = store
        self._telemetry = telemetry
        self.active: dict[str, SessionRecord] = {}
        self._workers: dict[str, PipelineWorker] = {}
        self._tasks: set[asyncio.Task] = set()

    async def run(
        self,
        transport: BaseTransport,
        kind: str,
        *,
        ends_on_disconnect: Callable[[], bool] = lambda: True,
        join_timeout_secs: float | None = None,
        allowance: ClientAllowance | None = None,
    ) -> SessionRecord:
        """Run one session's pipeline until the client leaves or the pipeline ends.

        `ends_on_disconnect` decides, when a client leaves, whether the session is over (in a
        Daily room only when the last participant has left). With `join_timeout_secs`, a session
        nobody joins in time (or whose transport fails to join) ends instead of waiting forever.
        `allowance` is what the client may send (one is made from the settings if not given)."""
        record = SessionRecord(
            session_id=uuid.uuid4().hex,
            transport=kind,
            started_at=time.time(),
            providers=describe_providers(self._settings),
        )

        async def turn_finished(turn: TurnRecord) -> None:
            await self._turn_finished(record, worker, turn)

        async def keep_visualization(entry: dict) -> None:
            record.visualizations.append(entry)
            await self._store.add_visualization(record.session_id, entry)

        worker, recorder = build_worker(
            transport,
            self._settings,
            self._engines,
            session_id=record.session_id,
            on_turn=turn_finished,
            resources=SessionResources(
                record=record,
                telemetry=self._telemetry,
                max_results=self._settings.max_results_per_session,
            ),
            on_visualization=keep_visualization,
            on_error=self._telemetry.record_error,
            allowance=allowance,
        )
        runner = WorkerRunner(handle_sigint=False)

        @transport.event_handler("on_client_connected")
        async def connected(_transport, _client):
            record.state = "active"

        @transport.event_handler("on_client_disconnected")
        async def disconnected(_transport, _client):
            if ends_on_disconnect():
                record.state = "ending"
                record.end_reason = record.end_reason or "client_left"
                await worker.cancel()

        async def end_unjoined(reason: str) -> None:
            if record.state == "starting":
                logger.warning(f"Session {record.session_id} ends: {reason}")
                record.state, record.end_reason = "ending", "not_joined"
                await worker.cancel()

        if join_timeout_secs is not None:

            @transport.event_handler("on_error")
            async def transport_error(_transport, error):
                if "join" in str(error).lower():
                    await end_unjoined(f"the transport could not join: {error}")

            async def join_deadline():
                await asyncio.sleep(join_timeout_secs)
                await end_unjoined(f"nobody joined within {join_timeout_secs:.0f}s")

            watchdog = asyncio.create_task(join_deadline())

        # Idle and maximum-duration limits end the session the way a drain does.
        deadlines = SessionDeadlines.from_settings(self._settings)
        worker.add_observer(deadlines)
        deadline_watch = asyncio.create_task(
            deadlines.watch(
                lambda reason, goodbye: self._end(record, worker, reason, goodbye),
                self._settings.drain_timeout_secs,
                worker.cancel,
            )
        )

        self.active[record.session_id] = record
        self._workers[record.session_id] = worker
        self._telemetry.session_started(kind)
        self._telemetry.track_peaks(record.session_id)
        try:  # from here on, whatever fails, the session is ended and its slot freed
            await self._store.save_session(record)
            logger.info(f"Session {record.session_id} started over {kind}")
            await runner.add_workers(worker)
            await runner.run()
        finally:
            if join_timeout_secs is not None:
                watchdog.cancel()
            deadline_watch.cancel()
            await recorder.finish()
            record.state, record.ended_at = "ended", time.time()
            record.end_reason = record.end_reason or "pipeline_ended"
            record.resources = self._telemetry.untrack_peaks(record.session_id)
            await self._store.save_session(record)
            self.active.pop(record.session_id, None)
            self._workers.pop(record.session_id, None)
            self._telemetry.session_ended(kind)
            logger.info(f"Session {record.session_id} ended after {record.duration_secs:.1f}s")
            # A finished pipeline's objects sit in reference cycles; collect them now rather
            # than let every ended session's buffers pile up until the next GC generation.
            # (The event handlers above still hold `worker`'s cell: it is emptied, not deleted,
            # which would make it undefined to them. Typed for the session, not this release.)
            worker = runner = recorder = None  # type: ignore[assignment]
            gc.collect()
        return record

    async def _turn_finished(self, record: SessionRecord, worker: PipelineWorker, turn: TurnRecord) -> None:
        previous_end = record.turns[-1].ended_at if record.turns else record.started_at
        assert previous_end is not None  # a turn is recorded once it has ended (TurnRecorder._close)
        turn.cost = price_turn(
            turn.usage,
            turn.providers,
            self._settings.prices,
            transport=record.transport,
            duration_secs=(turn.ended_at or time.time()) - previous_end,
        )
        record.turns.append(turn)
        await self._store.append_turn(turn)
        self._telemetry.record_turn(turn)
        if turn.status == "failed":
            failure = turn.failure
            self._telemetry.record_error(f"{failure.stage}_{failure.kind}" if failure else "turn_failed")
        await worker.rtvi.send_server_message(
            {
                "type": "turn-metrics",
                "turn": turn.model_dump(mode="json"),
                "session": session_summary(record),
            }
        )

    def spawn(self, transport: BaseTransport, kind: str, **options) -> asyncio.Task:
        """Run a session in the background (transports whose handshake returns first)."""
        task = asyncio.create_task(self.run(transport, kind, **options))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self, goodbye: str, timeout: float) -> None:
        """Say goodbye to every active session and end it gracefully, within `timeout`."""
        if not self._workers:
            return
        logger.info(f"Draining {len(self._workers)} session(s)")
        for session_id, worker in list(self._workers.items()):
            await self._end(self.active[session_id], worker, "server_shutdown", goodbye)
        deadline = time.monotonic() + timeout
        while self._workers and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for worker in list(self._workers.values()):
            await worker.cancel()

    async def _end(self, record: SessionRecord, worker: PipelineWorker, reason: str, goodbye: str) -> None:
        """End one session gracefully: tell the client why, speak the goodbye, then end."""
        if record.state == "ending":  # already saying goodbye, or the client left
            return
        logger.info(f"Session {record.session_id} ends: {reason}")
        record.state, record.end_reason = "ending", reason
        await worker.rtvi.send_server_message(
            {"type": "session-ending", "session_id": record.session_id, "reason": reason, "message": goodbye}
        )
        # EndFrame is queued behind the goodbye, so the pipeline ends once it is spoken.
        await worker.queue_frames([TTSSpeakFrame(goodbye, append_to_context=False), EndFrame()])

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
