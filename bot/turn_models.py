"""The turn-taking models of every session: Silero VAD and Smart Turn v3, one of each per
process, shared by all sessions.

Pipecat's analyzers load a model per instance, i.e. per session: an ONNX Runtime session for
Silero and one for Smart Turn (with their own thread pools), plus a worker thread each, and
Silero hands every 20 ms of every session's audio to its own thread. Here:

- `SharedSileroVADAnalyzer` keeps only the model's recurrent state per session; the windows of
  all sessions that are due at the same moment are scored together, one batched run of one
  shared ONNX session on one shared thread (`SileroBatcher`). Silero scores each batch row
  independently, so a session's confidences are the same as alone.
- `SharedSmartTurnAnalyzer` keeps Pipecat's per-session audio buffering and runs its
  inference on one shared ONNX session and a shared pool of one thread per core.

`create_vad_analyzer` and `create_turn_stop_strategy` are what `bot/pipeline.py` builds each
session's analyzers with. The turn model's time is also reported as a Pipecat processing
metric named `TURN_MODEL_METRIC`, which RTVI forwards to the client in its `metrics` message
(Pipecat's own turn metric does not reach the client), so a benchmark can tell it apart from
the time the rest of the server takes.
"""

import asyncio
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from importlib import resources

import numpy as np
import onnxruntime as ort
from loguru import logger
from pipecat.audio.turn.base_turn_analyzer import EndOfTurnState
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn, SmartTurnParams
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState
from pipecat.frames.frames import MetricsFrame
from pipecat.metrics.metrics import MetricsData, ProcessingMetricsData, TurnMetricsData
from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy

from bot.frames import RequestTranscriptionFrame
from bot.settings import Settings

TURN_MODEL_METRIC = "smart-turn"


class MeasuredTurnAnalyzerStopStrategy(TurnAnalyzerUserTurnStopStrategy):
    """Pipecat's turn-analyzer stop strategy, whose model time also reaches the client, and
    which waits a little longer for a request whose words say it goes on.

    Smart Turn hears a pause after "Show me a bar chart of monthly sales:" as the end of a turn;
    the words say otherwise (a chart with no numbers yet, a list ending in a comma, "is this
    positive or negative" with nothing to judge). When `goes_on(words of the turn so far)` says
    so, the turn ends only after `hold_secs` more of silence; speech meanwhile goes on in the
    same turn. A finished question is not held: it ends as fast as before."""

    def __init__(
        self,
        *,
        goes_on: Callable[[str], bool] | None = None,
        hold_secs: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._goes_on = goes_on
        self._hold_secs = hold_secs
        self._turn_words: list[str] = []
        self._hold_task: asyncio.Task | None = None
        self._held_out = False  # the hold ran its course: the turn may end

    async def _handle_prediction_result(self, result: MetricsData | None):
        if isinstance(result, TurnMetricsData):
            seconds = result.e2e_processing_time_ms / 1000
            timing = ProcessingMetricsData(processor=TURN_MODEL_METRIC, value=seconds)
            await self.push_frame(MetricsFrame(data=[result, timing]))
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

    async def _end_hold(self) -> None:
        if self._hold_task is not None:
            task, self._hold_task = self._hold_task, None
            await self.task_manager.cancel_task(task)

    async def cleanup(self):
        await self._end_hold()
        await super().cleanup()


VAD_RATE = 16000
VAD_CONTEXT = 64  # samples of the previous window it prepends
SMART_TURN_THREADS = 2  # its inference sits on the critical path at every turn end
# Turn ends of different sessions are analysed side by side, as with a thread per session, but
# no more at once than there are cores (batching them gains nothing on a CPU: the time grows
# with the batch).
SMART_TURN_WORKERS = os.cpu_count() or 2


def _session(package: str, name: str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    path = str(resources.files(package).joinpath(name))
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


class _SileroState:
    """What Silero remembers of one audio stream between windows."""

    def __init__(self) -> None:
        self.reset_states()

    def reset_states(self) -> None:  # the name SileroVADAnalyzer calls it by
        self.state = np.zeros((2, 1, 128), dtype=np.float32)
        self.context = np.zeros((1, VAD_CONTEXT), dtype=np.float32)


class SileroBatcher:
    """Scores the VAD windows of every session with one model: whatever is waiting when the
    model thread is free goes in one batch, so a busy server runs fewer, larger batches."""

    def __init__(self) -> None:
        self._session = _session("pipecat.audio.vad.data", "silero_vad.onnx", threads=1)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="silero-vad")
        self._pending: list[tuple[_SileroState, list[np.ndarray], asyncio.Future]] = []
        self._draining: asyncio.Task | None = None

    async def score(self, state: _SileroState, windows: list[np.ndarray]) -> list[float]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((state, windows, future))
        if self._draining is None:
            self._draining = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    scores = await loop.run_in_executor(self._executor, self._run, batch)
                except Exception as e:
                    scores = [e] * len(batch)
                for (_, _, future), result in zip(batch, scores):
                    if future.done():  # its session ended meanwhile
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._draining = None

    def _run(self, batch) -> list[list[float]]:
        scores: list[list[float]] = [[] for _ in batch]
        # A stream's windows depend on each other through its state: one round per window.
        for round_ in range(max(len(windows) for _, windows, _ in batch)):
            rows = [(i, state, windows[round_]) for i, (state, windows, _) in enumerate(batch) if round_ < len(windows)]
            x = np.concatenate([np.concatenate((s.context, w[None, :]), axis=1) for _, s, w in rows])
            h = np.concatenate([s.state for _, s, _ in rows], axis=1)
            out, h_next = self._session.run(None, {"input": x, "state": h, "sr": np.array(VAD_RATE, dtype=np.int64)})
            for k, (i, state, _) in enumerate(rows):
                state.state = np.ascontiguousarray(h_next[:, k : k + 1, :])
                state.context = x[k : k + 1, -VAD_CONTEXT:].copy()
                scores[i].append(float(out[k, 0]))
        return scores


class SharedSileroVADAnalyzer(SileroVADAnalyzer):
    """Pipecat's Silero VAD (same thresholds, smoothing and state resets) on the shared
    batched model."""

    def __init__(
        self,
        *,
        batcher: SileroBatcher,
        params: VADParams | None = None,
        max_utterance_secs: float = 30.0,
    ):
        VADAnalyzer.__init__(self, params=params)  # not SileroVADAnalyzer's: it loads a model
        self._max_utterance_secs = max_utterance_secs
        self._utterance_bytes = 0
        self._batcher = batcher
        self._model = _SileroState()
        self._windows_since_reset = 0
        self._low_confidence_windows = 0
        self._scores: deque[float] = deque()
        # Called with each state the analysis returns, STARTING and STOPPING included (Pipecat's
        # VAD controller only passes on SPEAKING and QUIET).
        self.on_state: Callable[[VADState], Awaitable[None]] | None = None

    def set_sample_rate(self, sample_rate: int):
        if (self._init_sample_rate or sample_rate) != VAD_RATE:
            raise ValueError(f"the shared Silero VAD runs at {VAD_RATE} Hz, not {sample_rate}")
        super().set_sample_rate(sample_rate)

    async def analyze_audio(self, buffer: bytes) -> VADState:
        """Score the windows this audio completes (batched with other sessions), then run
        Pipecat's own VAD state machine over them on the event loop."""
        pending = self._vad_buffer + buffer
        size = self._vad_frames_num_bytes
        windows = [
            np.frombuffer(pending[i : i + size], dtype=np.int16).astype(np.float32) / 32768.0
            for i in range(0, len(pending) - size + 1, size)
        ]
        if windows:
            self._scores.extend(await self._batcher.score(self._model, windows))
        state = self._utterance_capped(self._run_analyzer(buffer), len(buffer))
        if self.on_state is not None:
            await self.on_state(state)
        return state

    def _utterance_capped(self, state: VADState, audio_bytes: int) -> VADState:
        """QUIET once the user has spoken `max_utterance_secs` without stopping: the utterance
        ends there and is transcribed (the STT buffers nothing longer), and speech that goes
        on starts the next one."""
        if state not in (VADState.SPEAKING, VADState.STOPPING):
            self._utterance_bytes = 0
            return state
        self._utterance_bytes += audio_bytes
        if self._utterance_bytes < self._max_utterance_secs * self.sample_rate * 2:
            return state
        logger.info(f"An utterance reached {self._max_utterance_secs:g} s (AGENT_MAX_UTTERANCE_SECS): ended")
        self._vad_state, self._vad_starting_count, self._vad_stopping_count = VADState.QUIET, 0, 0
        self._utterance_bytes = 0
        return VADState.QUIET

    def voice_confidence(self, buffer) -> float:
        confidence = self._scores.popleft()  # scored in analyze_audio, in window order
        self._maybe_reset_model(confidence)
        return confidence


class SharedSmartTurnModel:
    """One Smart Turn v3 ONNX session (thread-safe) and the threads every session's
    inference runs on."""

    def __init__(self) -> None:
        self.session = _session("pipecat.audio.turn.smart_turn.data", "smart-turn-v3.2-cpu.onnx", SMART_TURN_THREADS)
        self.executor = ThreadPoolExecutor(max_workers=SMART_TURN_WORKERS, thread_name_prefix="smart-turn")
        # Start every thread now (the pool would start them one busy moment at a time), so the
        # process's thread count is settled once the first session has begun.
        started = threading.Barrier(SMART_TURN_WORKERS)
        for _ in range(SMART_TURN_WORKERS):
            self.executor.submit(started.wait, 10)


class SharedSmartTurnAnalyzer(LocalSmartTurnAnalyzerV3):
    """Pipecat's local Smart Turn v3 (its buffering, features and decision) per session, on
    the shared model and threads."""

    def __init__(self, *, model: SharedSmartTurnModel, **kwargs):
        BaseSmartTurn.__init__(self, **kwargs)  # not LocalSmartTurnAnalyzerV3's: it loads a model
        self._log_data = False
        self._session = model.session
        self._shared_executor = model.executor

    @property
    def _model_executor(self) -> ThreadPoolExecutor:
        # Never stored in self._executor, so a session's cleanup leaves the shared threads alone.
        return self._shared_executor

    async def analyze_end_of_turn(self) -> tuple[EndOfTurnState, MetricsData | None]:
        """Pipecat's analysis; its time (the metric's "VAD stop to turn completion") also
        counts the wait for a free shared thread, which is part of the turn end's delay."""
        started = time.perf_counter()
        state, result = await super().analyze_end_of_turn()
        if isinstance(result, TurnMetricsData):
            result.e2e_processing_time_ms = (time.perf_counter() - started) * 1000
        return state, result


@cache
def silero_batcher() -> SileroBatcher:
    return SileroBatcher()


@cache
def smart_turn_model() -> SharedSmartTurnModel:
    return SharedSmartTurnModel()


def load_turn_models(settings: Settings) -> None:
    """Load the shared models now rather than when the first session starts."""
    silero_batcher()
    if settings.smart_turn:
        smart_turn_model()


def create_vad_analyzer(settings: Settings) -> SileroVADAnalyzer:
    return SharedSileroVADAnalyzer(
        batcher=silero_batcher(),
        params=VADParams(stop_secs=settings.vad_stop_secs),
        max_utterance_secs=settings.max_utterance_secs,
    )


def create_turn_stop_strategy(
    settings: Settings, goes_on: Callable[[str], bool] | None = None
) -> TurnAnalyzerUserTurnStopStrategy:
    """`goes_on(words)`: whether a request's words say more is coming (see the strategy)."""
    return MeasuredTurnAnalyzerStopStrategy(
        turn_analyzer=SharedSmartTurnAnalyzer(
            model=smart_turn_model(),
            params=SmartTurnParams(stop_secs=settings.turn_max_silence_secs),
        ),
        goes_on=goes_on,
        hold_secs=settings.dictation_hold_secs,
    )
