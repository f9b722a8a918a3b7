"""Fault recovery: a failing or silent STT, LLM or TTS costs one turn, never the session.

`FaultRecovery` sits just before the output transport. Its `observer` (added to the worker's
observers) sees every frame wherever it is pushed, which is how it learns that a stage
failed: an `ErrorFrame` raised by the session's STT, LLM or TTS service, or a stage that
stays silent past its timeout:

- STT: no final transcript (nor a decode that found no words) `stt_timeout_secs` after the
  VAD heard the user stop;
- LLM: no first token `llm_timeout_secs` after a request, or no next one as long mid-stream;
- TTS: no audio `tts_timeout_secs` after it was handed the answer's first sentence.

A failure during a user turn (from the user starting to speak until the bot has finished its
answer) fails that turn and nothing more: the turn is recorded as failed with its stage, kind
and message (`on_failure`); the client gets an RTVI `error` (Pipecat sends one for every
error frame; a timeout is reported as one); an interruption cancels whatever is still
waiting on the stuck stage, so the next user turn starts clean; and the pre-rendered apology
goes straight to the output transport, so it plays even when the TTS is what failed. A
streaming STT or TTS that went silent may stay silent, so its connection is replaced after
such a turn.
Pipecat reports errors outside a user turn (a greeting, a reconnect) as RTVI errors itself.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from loguru import logger
from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    ErrorFrame,
    Frame,
    FunctionCallInProgressFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    MetricsFrame,
    SpeechOutputAudioRawFrame,
    StartFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    UserStartedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import ProcessingMetricsData, TTFBMetricsData
from pipecat.observers.base_observer import FramePushed
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import WebsocketTTSService
from pipecat.utils.errors import ErrorCategory

from bot.observers.guarded import GuardedObserver
from bot.pipecat_internals import close_tts_websocket, has_tts_websocket, reconnects, request_stt_reconnect
from bot.records import TurnFailure

# What each stage owes when it is waited on, for the timeout's message.
_AWAITED = {
    "stt": "final transcript",
    "llm": "token",
    "tts": "audio",
}


TRAILING_SILENCE_SECS = 0.5


@dataclass(frozen=True)
class StageTimeouts:
    stt: float
    llm: float
    tts: float


class _Watch(GuardedObserver):
    """Hands every frame, where it is first pushed, to the processor that owns it."""

    observes_microphone_audio = False  # see bot/observers/lean_worker.py

    def __init__(self, owner: "FaultRecovery", on_error: Callable[[str], None] | None):
        super().__init__(observe_every_push=False, on_error=on_error)
        self._owner = owner

    async def observe(self, data: FramePushed):
        await self._owner.observe(data.frame, data.source)


class FaultRecovery(FrameProcessor):
    def __init__(
        self,
        *,
        stages: dict[str, FrameProcessor | None],
        timeouts: StageTimeouts,
        apology: bytes,
        apology_sample_rate: int,
        on_failure: Callable[[TurnFailure], Awaitable[object]],  # what it returns is not used
        on_error: Callable[[str], None] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._stage_of = {service: stage for stage, service in stages.items() if service is not None}
        stt, tts = stages.get("stt"), stages.get("tts")
        self._stt_name = stt.name if stt is not None else None
        self._timeouts = timeouts
        # Trailing silence: the output transport ends the bot's speech after 0.35 s of it
        # (without, only after a 3 s fallback).
        silence = bytes(int(apology_sample_rate * TRAILING_SILENCE_SECS) * 2)
        self._apology = apology + silence if apology else b""
        self._apology_rate = apology_sample_rate
        self._on_failure = on_failure
        self.observer = _Watch(self, on_error)

        self._in_turn = False
        self._user_speaking = False
        self._answer_heard = False  # TTS audio arrived in this turn
        # A streaming STT may finalize on its own endpointing before the VAD reports the stop.
        self._transcribed = False  # since the VAD last heard speech start
        self._deadlines: dict[str, float] = {}  # stage -> monotonic time it must answer by
        self._held_stt_error: TurnFailure | None = None
        self._changed = asyncio.Event()
        self._watchdog: asyncio.Task | None = None
        if tts is not None:
            # The TTS owes audio from the moment it is handed text to speak (a whole
            # sentence), not from the LLM's first token.
            tts.add_event_handler("on_tts_request", self._on_tts_request)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame) and self._watchdog is None:
            self._watchdog = self.create_task(self._watch_deadlines(), "fault_watchdog")
        await self.push_frame(frame, direction)

    async def cleanup(self):
        if self._watchdog is not None:
            await self.cancel_task(self._watchdog)
            self._watchdog = None
        await super().cleanup()

    # --- what the observer sees ---

    async def observe(self, frame: Frame, source: FrameProcessor) -> None:
        now = time.monotonic()
        stage = self._stage_of.get(source)
        # The user's speech and its transcript are tracked in and out of turns: both can come
        # before the turn starts.
        if isinstance(frame, (VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame)):
            self._user_speaking = isinstance(frame, VADUserStartedSpeakingFrame)
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._transcribed = False
            self._deadlines.pop("stt", None)
        elif isinstance(frame, TranscriptionFrame) or self._is_stt_decode(frame):
            self._transcribed = True
            self._deadlines.pop("stt", None)
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._in_turn, self._answer_heard = True, False
            self._deadlines.clear()
            self._held_stt_error = None
        elif isinstance(frame, ErrorFrame):
            await self._on_error(frame)
            return
        elif not self._in_turn:
            return
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            if self._held_stt_error is not None:
                await self._fail(self._held_stt_error)
                return
            if not self._transcribed:
                self._arm("stt", now)
        elif isinstance(frame, LLMContextFrame):
            self._arm("llm", now)
        elif stage == "llm" and isinstance(frame, (LLMTextFrame, FunctionCallInProgressFrame)):
            if "llm" in self._deadlines:
                self._arm("llm", now)  # a stream that stalls mid-answer is as stuck
        elif stage == "llm" and isinstance(frame, LLMFullResponseEndFrame):
            self._deadlines.pop("llm", None)
        elif stage == "tts" and isinstance(frame, TTSAudioRawFrame):
            self._answer_heard = True
            self._deadlines.pop("tts", None)
        elif isinstance(frame, BotStoppedSpeakingFrame) and self._answer_heard and not self._deadlines:
            self._in_turn = False  # answered: later faults belong to no turn
        self._changed.set()

    async def _on_tts_request(self, _tts, _context_id: str, _text: str) -> None:
        if self._in_turn and not self._answer_heard and "tts" not in self._deadlines:
            self._arm("tts", time.monotonic())
            self._changed.set()

    def _is_stt_decode(self, frame: Frame) -> bool:
        """A finished STT decode that found no words (a cough) still answers the STT."""
        return isinstance(frame, MetricsFrame) and any(
            isinstance(data, (TTFBMetricsData, ProcessingMetricsData)) and data.processor == self._stt_name
            for data in frame.data
        )

    def _arm(self, stage: str, now: float) -> None:
        self._deadlines[stage] = now + getattr(self._timeouts, stage)

    async def _on_error(self, frame: ErrorFrame) -> None:
        stage = self._stage_of.get(frame.processor) if frame.processor is not None else None
        # A tool that raised is the application's failure, and the LLM answers around it.
        if stage is None or frame.category is ErrorCategory.APPLICATION or not self._in_turn:
            return
        failure = TurnFailure(stage=stage, kind="error", message=frame.error)
        if stage == "stt" and self._user_speaking:
            # The user is still talking: apologise once they stop, not over them.
            self._held_stt_error = self._held_stt_error or failure
        else:
            await self._fail(failure)

    # --- timeouts ---

    async def _watch_deadlines(self) -> None:
        while True:
            self._changed.clear()
            wait = min(self._deadlines.values()) - time.monotonic() if self._deadlines else None
            try:
                await asyncio.wait_for(self._changed.wait(), wait)
            except TimeoutError:
                pass
            now = time.monotonic()
            expired = [stage for stage, deadline in self._deadlines.items() if deadline <= now]
            if expired:
                stage = expired[0]
                seconds = getattr(self._timeouts, stage)
                await self._fail(
                    TurnFailure(
                        stage=stage,
                        kind="timeout",
                        message=f"no {_AWAITED[stage]} within {seconds:g}s",
                    )
                )

    # --- recovery ---

    async def _fail(self, failure: TurnFailure) -> None:
        self._deadlines.clear()
        self._held_stt_error = None
        self._changed.set()
        if not self._in_turn:
            return
        self._in_turn = False
        logger.warning(f"{self}: turn failed in the {failure.stage} ({failure.kind}): {failure.message}")
        await self._on_failure(failure)
        if failure.kind == "timeout":
            # A service's own error frame already reaches the client as an RTVI error.
            await self.push_error(f"{failure.stage} timeout: {failure.message}", category=ErrorCategory.CONNECTIVITY)
        # Cancels the stuck stage's work (and any half-spoken answer) before the apology.
        await self.broadcast_interruption()
        if self._apology:
            # Speech (not TTS) audio: the output transport reports the bot speaking and
            # stopping from its loudness, as the client expects of any answer.
            await self.push_frame(
                SpeechOutputAudioRawFrame(self._apology, sample_rate=self._apology_rate, num_channels=1)
            )
        if failure.kind == "timeout":
            await self._reconnect(failure.stage)

    async def _reconnect(self, stage: str) -> None:
        """New connections for the services that hold one (the embedded ones have none)."""
        service = next((s for s, named in self._stage_of.items() if named == stage), None)
        if isinstance(service, STTService) and reconnects(service):
            await request_stt_reconnect(service)
        elif isinstance(service, WebsocketTTSService) and has_tts_websocket(service):
            # Reconnecting from here would leave Pipecat's receive loop on the old socket. In a
            # task: a dead peer makes the close wait for its timeout.
            self.create_task(close_tts_websocket(service), name="close_stuck_tts_socket")
