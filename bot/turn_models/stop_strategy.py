"""Pipecat's turn-analyzer stop strategy, measured for the client and held for a request that
goes on."""

import asyncio
from collections.abc import Callable

from loguru import logger
from pipecat.frames.frames import MetricsFrame
from pipecat.metrics.metrics import MetricsData, ProcessingMetricsData, TurnMetricsData
from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy

from bot.frames import RequestTranscriptionFrame

TURN_MODEL_METRIC = "smart-turn"


class MeasuredTurnAnalyzerStopStrategy(TurnAnalyzerUserTurnStopStrategy):
    """Pipecat's turn-analyzer stop strategy, whose model time also reaches the client, and
    which waits a little longer for a request whose words say it goes on.

    Smart Turn hears a pause after "Show me a bar chart of monthly sales:" as the end of a turn;
    the words say otherwise (a chart with no numbers yet, a list ending in a comma, "is this
    positive or negative" with nothing to judge). When `goes_on(words of the turn so far)` says
    so, the turn ends only after `hold_secs` more of silence; speech meanwhile goes on in the
    same turn. A finished question is not held: it ends as fast as before.

    The other way round, Smart Turn hears some finished requests as unfinished (a flat voice
    asking "What time is it?", or "Is this review positive, the food was cold."), and the turn
    would then end only at its silence fallback. When `is_whole(words of the turn so far)` says
    they ask for something whole, the turn ends `question_secs` after the verdict instead."""

    def __init__(
        self,
        *,
        goes_on: Callable[[str], bool] | None = None,
        is_whole: Callable[[str], bool] | None = None,
        hold_secs: float = 0.0,
        question_secs: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._goes_on = goes_on
        self._is_whole = is_whole
        self._hold_secs = hold_secs
        self._question_secs = question_secs
        self._question_task: asyncio.Task | None = None
        self._turn_words: list[str] = []
        self._hold_task: asyncio.Task | None = None
        self._held_out = False  # the hold ran its course: the turn may end

    async def _handle_prediction_result(self, result: MetricsData | None):
        if isinstance(result, TurnMetricsData):
            seconds = result.e2e_processing_time_ms / 1000
            timing = ProcessingMetricsData(processor=TURN_MODEL_METRIC, value=seconds)
            await self.push_frame(MetricsFrame(data=[result, timing]))
            if not result.is_complete and self._vad_stopped and self._question_secs > 0 and self._is_whole:
                await self._end_question_wait()
                self._question_task = self.task_manager.create_task(self._question_ends(), f"{self}::question")
        else:
            await super()._handle_prediction_result(result)

    async def _reset(self):
        self._turn_words = []
        await super()._reset()

    async def _handle_transcription(self, frame):
        if isinstance(frame, RequestTranscriptionFrame):
            self._turn_words = []  # its words are every part's
        if frame.text.strip():
            self._turn_words.append(frame.text.strip())
        await super()._handle_transcription(frame)

    async def _discard_pending_end_of_turn(self):
        await self._end_hold()
        await self._end_question_wait()
        self._held_out = False
        await super()._discard_pending_end_of_turn()

    async def _maybe_trigger_user_turn_stopped(self):
        if self._turn_complete and self._text and self._should_hold():
            if self._hold_task is None:
                self._hold_task = self.task_manager.create_task(self._hold(), f"{self}::hold")
            return
        await super()._maybe_trigger_user_turn_stopped()

    def _should_hold(self) -> bool:
        if self._held_out or self._goes_on is None or self._hold_secs <= 0:
            return False
        words = " ".join(self._turn_words)
        return bool(words) and self._goes_on(words)

    async def _hold(self) -> None:
        try:
            await asyncio.sleep(self._hold_secs)
        except asyncio.CancelledError:
            return
        self._hold_task = None
        self._held_out = True
        logger.debug(f"{self}: held {self._hold_secs:g}s for more of the request; it ends")
        await self._maybe_trigger_user_turn_stopped()

    def _asks_for_something_whole(self) -> bool:
        return self._is_whole is not None and self._is_whole(" ".join(self._turn_words))

    async def _question_ends(self) -> None:
        try:
            await asyncio.sleep(self._question_secs)
        except asyncio.CancelledError:
            return
        self._question_task = None
        if self._turn_complete or not self._asks_for_something_whole():
            return  # Smart Turn's own end, or its silence fallback, decides
        logger.debug(f"{self}: a whole request Smart Turn heard as unfinished; it ends")
        self._turn_complete = True
        await self._maybe_trigger_user_turn_stopped()

    async def _end_question_wait(self) -> None:
        if self._question_task is not None:
            task, self._question_task = self._question_task, None
            await self.task_manager.cancel_task(task)

    async def _end_hold(self) -> None:
        if self._hold_task is not None:
            task, self._hold_task = self._hold_task, None
            await self.task_manager.cancel_task(task)

    async def cleanup(self):
        await self._end_hold()
        await self._end_question_wait()
        await super().cleanup()
