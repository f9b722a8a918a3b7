"""Watches one session's frames and writes a `TurnRecord` for every user turn.

A turn opens when the user starts speaking and closes when the bot has finished answering,
was interrupted, or failed (`bot.processors.fault_recovery` decides that and calls `fail`: not
every error frame fails a turn). On the way it collects the milestones of `bot.records.MILESTONES`
(seconds after the end of the user's speech, i.e. the VAD stop time minus its stop_secs),
the usage Pipecat's services report in `MetricsFrame`s, the tool calls, and both sides' text.
Pricing, storage and delivery are the session's business: the recorder hands each finished
record to `on_turn`.
"""

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    InterruptionFrame,
    LLMTextFrame,
    MetricsFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import (
    LLMUsageMetricsData,
    ProcessingMetricsData,
    STTUsageMetricsData,
    TTSUsageMetricsData,
)
from pipecat.observers.base_observer import FramePushed

from bot.frames import ReplyUnheardFrame, RequestTranscriptionFrame
from bot.observers.guarded import GuardedObserver
from bot.records import ToolCall, TurnFailure, TurnLatency, TurnRecord, TurnStatus, Usage


@dataclass
class EngineStage:
    """Which stage a processor serves, and the CPU threads its embedded engine computes on
    (None for a cloud service, whose CPU is not ours to count)."""

    stage: str
    threads: int | None


@dataclass
class _OpenTurn:
    record: TurnRecord
    speech_end: float | None = None  # wall time the user's speech ended
    milestones: dict[str, float] = field(default_factory=dict)
    tool_started: dict[str, float] = field(default_factory=dict)
    bot_speaking: bool = False
    reply_unheard: bool = False  # the user went on over the reply before they could hear it
    user_parts: list[str] = field(default_factory=list)
    bot_parts: list[str] = field(default_factory=list)

    @property
    def tools_settled(self) -> bool:
        """Every tool call of the turn so far has returned (true in a turn without tools)."""
        return all(call.duration_secs is not None for call in self.record.tool_calls)

    @property
    def answering(self) -> bool:
        """The user's turn has ended and the bot is working on (or speaking) its answer."""
        return "turn_end" in self.milestones


class TurnRecorder(GuardedObserver):
    observes_microphone_audio = False  # see bot/observers/lean_worker.py

    def __init__(
        self,
        *,
        session_id: str,
        providers: dict[str, str],
        engines: dict[str, EngineStage],
        on_turn: Callable[[TurnRecord], Awaitable[None]],
        on_error: Callable[[str], None] | None = None,
    ):
        # Every frame is seen once, when it is first pushed, wherever it flows afterwards.
        super().__init__(observe_every_push=False, on_error=on_error)
        self._session_id = session_id
        self._providers = providers
        self._engines = engines  # processor name -> stage
        self._on_turn = on_turn
        self._turn: _OpenTurn | None = None
        self._turns = 0

    async def observe(self, data: FramePushed):
        frame, now = data.frame, time.time()
        if isinstance(frame, UserStartedSpeakingFrame):
            await self._user_started(now)
            return
        turn = self._turn
        if turn is None:
            return  # the greeting, or frames between turns
        if isinstance(frame, VADUserStoppedSpeakingFrame) and not turn.answering:
            # The last VAD stop before the turn ends marks the end of speech.
            turn.speech_end = frame.timestamp - frame.stop_secs
            self._mark("vad_stop", frame.timestamp, restart=True)
        elif isinstance(frame, TranscriptionFrame):
            if isinstance(frame, RequestTranscriptionFrame):
                turn.user_parts.clear()  # the whole request, every part's words
            turn.user_parts.append(frame.text)
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._mark("turn_end", now)
        elif isinstance(frame, (LLMTextFrame, FunctionCallInProgressFrame)) and turn.answering:
            self._mark("llm_first_token", now)
            # Function-call frames are broadcast: one copy travels each way.
            if isinstance(frame, FunctionCallInProgressFrame) and frame.tool_call_id not in turn.tool_started:
                turn.tool_started[frame.tool_call_id] = now
                turn.record.tool_calls.append(
                    ToolCall(id=frame.tool_call_id, name=frame.function_name, arguments=dict(frame.arguments or {}))
                )
                turn.milestones.pop("answer_audio_sent", None)  # what was said before it was not
        elif isinstance(frame, FunctionCallResultFrame):
            self._tool_finished(frame, now)
        elif isinstance(frame, TTSAudioRawFrame) and turn.answering:
            self._mark("tts_first_audio", now)
            if turn.bot_speaking:
                # Ready while earlier words still play (or while the bot still spoke when the
                # turn ended): it goes out next, with no new BotStartedSpeakingFrame.
                self._mark("bot_audio_sent", now)
                if turn.tools_settled:
                    self._mark("answer_audio_sent", now)
        elif isinstance(frame, TTSTextFrame) and turn.answering:
            turn.bot_parts.append(frame.text)
        elif isinstance(frame, BotStartedSpeakingFrame):
            # Tracked even before the turn ends: a reply the user went on over can still be
            # playing when the turn ends, and the answer then follows it with no new start.
            turn.bot_speaking = True
            if turn.answering:
                self._mark("bot_audio_sent", now)
                if turn.tools_settled:
                    self._mark("answer_audio_sent", now)
        elif isinstance(frame, BotStoppedSpeakingFrame) and turn.bot_speaking:
            if turn.answering:
                await self._close("completed")
            else:
                turn.bot_speaking = False
        elif isinstance(frame, ReplyUnheardFrame) and turn.answering:
            turn.reply_unheard = True  # the speech it comes just before goes on with the request
        elif isinstance(frame, InterruptionFrame) and turn.answering:
            await self._close("interrupted")
        elif isinstance(frame, MetricsFrame):
            self._add_metrics(frame)

    @property
    def current_turn_id(self) -> str | None:
        """The open turn's id, which every message about it carries."""
        return self._turn.record.turn_id if self._turn else None

    async def fail(self, failure: TurnFailure) -> bool:
        """Close the open turn as failed; False when no turn is open."""
        if self._turn is None:
            return False
        self._turn.record.failure = failure
        self._turn.record.error = f"{failure.stage} {failure.kind}: {failure.message}"
        await self._close("failed")
        return True

    async def finish(self) -> None:
        """The session is ending: an answer still in flight counts as interrupted."""
        if self._turn and self._turn.answering:
            await self._close("interrupted")

    async def _user_started(self, now: float) -> None:
        if self._turn and self._turn.answering:
            if "bot_audio_sent" not in self._turn.milestones or self._turn.reply_unheard:
                # The user went on before any of the answer was heard (a pause mid-request:
                # "a bar chart of monthly sales: ... January 10"): the unheard answer is
                # dropped and this is still the same turn, answered once, for every word.
                self._go_on(self._turn)
                return
            await self._close("interrupted")  # barge-in: the user spoke over the answer
        if self._turn is None:
            self._turns += 1
            record = TurnRecord(
                turn_id=uuid.uuid4().hex,
                session_id=self._session_id,
                index=self._turns,
                started_at=now,
                providers=dict(self._providers),
            )
            self._turn = _OpenTurn(record=record)

    @staticmethod
    def _go_on(turn: _OpenTurn) -> None:
        """The open turn continues with more of the user's speech: its milestones start over
        (they are timed from the end of the whole request), and the unheard reply's tool calls
        go, as they go from the context (`bot.processors.request_merge`); what the user said so
        far and what was spent on it stay. The end of speech stays until a later VAD stop
        moves it: a turn restarted by a late transcript alone has no later one."""
        turn.milestones.clear()
        turn.bot_parts.clear()
        turn.reply_unheard = False
        turn.record.tool_calls.clear()
        turn.tool_started.clear()

    @property
    def _open_turn(self) -> _OpenTurn:
        """The turn being recorded: the methods below run only once a caller found one open."""
        assert self._turn is not None
        return self._turn

    def _mark(self, milestone: str, at: float, *, restart: bool = False) -> None:
        turn = self._open_turn
        if turn.speech_end is None or (milestone in turn.milestones and not restart):
            return
        turn.milestones[milestone] = max(0.0, at - turn.speech_end)

    def _tool_finished(self, frame: FunctionCallResultFrame, now: float) -> None:
        turn = self._open_turn
        for call in turn.record.tool_calls:
            if call.id == frame.tool_call_id and call.duration_secs is None:
                call.result = frame.result
                call.error = getattr(frame, "error", None)
                call.duration_secs = now - turn.tool_started.get(call.id, now)
        if turn.tools_settled:
            turn.milestones.pop("tools_done", None)
            self._mark("tools_done", now)

    def _add_metrics(self, frame: MetricsFrame) -> None:
        usage: Usage = self._open_turn.record.usage
        for data in frame.data:
            if isinstance(data, LLMUsageMetricsData):
                usage.llm_prompt_tokens += data.value.prompt_tokens
                usage.llm_completion_tokens += data.value.completion_tokens
                usage.llm_cached_tokens += data.value.cache_read_input_tokens or 0
            elif isinstance(data, TTSUsageMetricsData):
                usage.tts_characters += data.value
            elif isinstance(data, STTUsageMetricsData):
                usage.stt_audio_seconds += data.value.audio_seconds
            elif isinstance(data, ProcessingMetricsData):
                engine = self._engines.get(data.processor)
                if engine and engine.threads:
                    # Compute time x threads: what the engine's work cost in CPU time.
                    spent = usage.cpu_seconds.get(engine.stage, 0.0) + data.value * engine.threads
                    usage.cpu_seconds[engine.stage] = spent

    async def _close(self, status: TurnStatus) -> None:
        turn, self._turn = self._open_turn, None
        record = turn.record
        record.status = status
        record.ended_at = time.time()
        record.user_text = " ".join(p.strip() for p in turn.user_parts if p.strip())
        record.bot_text = " ".join(p.strip() for p in turn.bot_parts if p.strip())
        if turn.milestones:
            record.latency = TurnLatency.from_milestones(turn.milestones)
        await self._on_turn(record)
