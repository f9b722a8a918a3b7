"""Text mode: the user's turns typed into the product's own pipeline, in this process.

`bot.pipeline.build_worker(..., text_only=True)` builds the session pipeline the server runs
(the same LLM service, tools, routing, visualization processor, turn recorder, RTVI) without
the STT and the TTS. Turns go in as an RTVI `send-text`, the message a page's chat box sends,
and everything the pipeline sends to its client (RTVI messages, visualizations) is read off
the output transport.
"""

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InputTransportMessageFrame,
    LLMConfigureOutputFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_transport import BaseTransport
from pipecat.workers.runner import WorkerRunner
from prometheus_client import CollectorRegistry

from bot.pipeline import build_worker
from bot.providers import EmbeddedEngines, describe_providers, load_engine
from bot.records import SessionRecord, TurnRecord
from bot.session_resources import SessionResources
from bot.settings import Provider, Settings
from bot.telemetry import Telemetry

OnMessage = Callable[[dict[str, Any], float], Awaitable[None]]
IDLE_QUIET_S = 0.3  # no message for this long after a finished reply: the bot is done
TURN_DONE_TIMEOUT_S = 60.0
STARTUP_TIMEOUT_S = 30.0
NO_REPLY_S = 5.0  # a typed turn the LLM has not started on by then gets no reply


def text_telemetry() -> Telemetry:
    """The process figures the text sessions' tools read (`get_realtime_data`), as the server
    keeps them; sample them with `sample_resources_forever()` while the sessions run."""
    return Telemetry(registry=CollectorRegistry())


async def load_text_engines(settings: Settings) -> EmbeddedEngines:
    """The embedded LLM, when the LLM is embedded; text mode needs no STT or TTS engine."""
    engines = EmbeddedEngines()
    if settings.resolved("llm") is Provider.EMBEDDED:
        await load_engine(settings, "llm", engines)
    return engines


class _TextInput(FrameProcessor):
    """Nothing arrives from a microphone: the turns are queued on the worker."""

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


class _TextOutput(FrameProcessor):
    """Hands every message meant for the client to `on_message`, as the socket would send it."""

    def __init__(self, on_message: OnMessage, **kwargs):
        super().__init__(**kwargs)
        self._on_message = on_message
        self.text_only = asyncio.Event()  # the text-only setting went through the whole pipeline

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, (OutputTransportMessageFrame, OutputTransportMessageUrgentFrame)):
            await self._on_message(frame.message, time.monotonic())
        elif isinstance(frame, LLMConfigureOutputFrame) and frame.skip_tts:
            self.text_only.set()
        await self.push_frame(frame, direction)


class TextTransport(BaseTransport):
    def __init__(self, on_message: OnMessage):
        super().__init__()
        self._input = _TextInput(name="text-input")
        self._output = _TextOutput(on_message, name="text-output")

    async def wait_text_only(self, timeout: float) -> None:
        await asyncio.wait_for(self._output.text_only.wait(), timeout)

    def input(self) -> FrameProcessor:
        return self._input

    def output(self) -> FrameProcessor:
        return self._output


class TextSession:
    """One conversation with the text pipeline; also the Pipecat eval driver's client."""

    has_user_tts = False

    def __init__(self, settings: Settings, engines: EmbeddedEngines, on_message: OnMessage, telemetry: Telemetry):
        session_id = uuid.uuid4().hex
        record = SessionRecord(
            session_id=session_id,
            transport="eval-text",
            started_at=time.time(),
            providers=describe_providers(settings),
        )
        self.turns: list[TurnRecord] = []
        self.sent_at: list[float] = []
        self.messages: list[tuple[float, dict[str, Any]]] = []

        async def received(message: dict[str, Any], at: float) -> None:
            self.messages.append((at, message))
            await on_message(message, at)

        async def keep_turn(turn: TurnRecord) -> None:
            self.turns.append(turn)

        self._transport = TextTransport(received)
        self.worker, self._recorder = build_worker(
            self._transport,
            # A scripted user types as fast as the bot answers: the typing rate is not under test.
            settings.model_copy(update={"greeting": "", "max_text_per_sec": 1000.0}),
            engines,
            session_id=session_id,
            on_turn=keep_turn,
            resources=SessionResources(record=record, telemetry=telemetry),
            text_only=True,
        )
        self._runner = WorkerRunner(handle_sigint=False)
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> "TextSession":
        await self._runner.add_workers(self.worker)
        self._task = asyncio.create_task(self._runner.run())
        # Every answer is text only, the follow-up after a tool call included (RTVI's
        # send-text option covers only the first LLM run).
        await self.worker.queue_frames([LLMConfigureOutputFrame(skip_tts=True)])
        # RTVI reads the setting as it passes; a send-text (a system frame, which overtakes
        # queued frames) handled before that would restore the spoken default after its turn.
        await self._transport.wait_text_only(STARTUP_TIMEOUT_S)
        return self

    async def __aexit__(self, *exc) -> None:
        # The script is over: whatever the LLM still generates is of no interest.
        await self.worker.cancel()
        try:
            await asyncio.wait_for(self._task, 10)
        except (TimeoutError, Exception) as e:  # noqa: BLE001
            logger.warning(f"text session did not end cleanly: {e!r}")

    async def send_text(self, text: str) -> None:
        self.sent_at.append(time.monotonic())
        message = {
            "label": "rtvi-ai",
            "type": "send-text",
            "id": uuid.uuid4().hex[:8],
            "data": {"content": text, "options": {"run_immediately": True, "audio_response": False}},
        }
        await self.worker.queue_frames([InputTransportMessageFrame(message=message)])

    async def say(self, text: str) -> None:  # the driver speaks only when has_user_tts
        await self.send_text(text)

    def _answering(self) -> bool:
        """Whether the reply to the latest send is still being produced."""
        since = self.sent_at[-1] if self.sent_at else 0.0
        running, calls, finished, started = False, set(), False, False
        for at, message in self.messages:
            kind, data = message.get("type"), message.get("data") or {}
            if kind == "bot-llm-started":
                running = True
                started = started or at >= since
            elif kind == "bot-llm-stopped":
                running = False
                finished = finished or at >= since
            elif kind == "llm-function-call-in-progress":
                calls.add(data.get("tool_call_id"))
            elif kind == "llm-function-call-stopped":
                calls.discard(data.get("tool_call_id"))
        if not started and time.monotonic() - since >= NO_REPLY_S:
            return False  # the input got no reply at all (e.g. an empty message)
        return running or bool(calls) or not finished

    async def wait_idle(self) -> None:
        """Until the reply to the latest send is finished, as a reader waits for the answer."""
        if not self.sent_at:
            return
        deadline = time.monotonic() + TURN_DONE_TIMEOUT_S
        while time.monotonic() < deadline:
            last = self.messages[-1][0] if self.messages else 0.0
            if not self._answering() and time.monotonic() - last >= IDLE_QUIET_S:
                return
            await asyncio.sleep(0.05)

    def turn_records(self) -> list[dict[str, Any]]:
        return [t.model_dump(mode="json") for t in self.turns]
