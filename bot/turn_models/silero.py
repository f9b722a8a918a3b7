"""Silero VAD for every session on one model: each session keeps only the model's recurrent
state, and the windows of all sessions due at the same moment are scored in one batch."""

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np
from loguru import logger
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState

from bot.turn_models.onnx import onnx_session

VAD_RATE = 16000
VAD_CONTEXT = 64  # samples of the previous window it prepends


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
        self._session = onnx_session("pipecat.audio.vad.data", "silero_vad.onnx", threads=1)
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
                scores: Sequence[list[float] | Exception]
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

    # Pipecat's slot for its SileroOnnxModel holds this session's state instead: Pipecat's
    # periodic `_model.reset_states()` then resets just that state.
    _model: _SileroState  # type: ignore[assignment]

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


@cache
def silero_batcher() -> SileroBatcher:
    return SileroBatcher()
