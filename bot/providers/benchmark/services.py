"""Benchmark providers: STT, LLM and TTS services that do no work, only wait a fixed delay.

With all three selected (`AGENT_*_PROVIDER=benchmark`, never chosen by `auto`), a turn's
voice-to-voice time is the VAD's stop time, the turn model's time, these configured delays,
and whatever the server itself adds on top: that last part is what `bench/capacity.py`
measures. Each service also injects the failures `AGENT_BENCHMARK_FAULTS` names for a given
user turn, so tests can see how the server copes with a provider that errors or never answers.

- STT: counts the speech between the VAD's start and stop, and `delay` after the VAD stop
  pushes one finalized transcript, "Benchmark utterance N, X.X seconds of speech.", where N
  is the user turn and X the seconds the VAD heard. No audio is decoded.
- LLM: `delay` after each request, streams the fixed `BENCHMARK_REPLY` word by word.
- TTS: `delay` after each sentence, a quiet 440 Hz tone as long as the sentence would take to
  say (`SECONDS_PER_CHARACTER`), at the pipeline's output rate.
"""

import asyncio
from collections.abc import AsyncGenerator
from functools import lru_cache

import numpy as np
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import LLMTokenUsage
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import STTSettings, TTSSettings
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

from bot.providers.llama.service import llm_settings
from bot.settings import BenchmarkFault

BENCHMARK_REPLY = "Sure, here is a short benchmark answer."
# About 15 characters a second: the pace of ordinary speech.
SECONDS_PER_CHARACTER = 0.065
TONE_HZ = 440
TONE_AMPLITUDE = 1000  # ~-33 dBFS: quiet, yet plainly not silence to a client's level meter


class _FaultSchedule:
    """The faults of one stage, and which user turn of the session is current."""

    def __init__(self, stage: str, faults: tuple[BenchmarkFault, ...]):
        self._faults = {fault.turn: fault.kind for fault in faults if fault.stage == stage}
        self.turn = 0  # 0 until the user first speaks: the greeting is never faulted

    def count(self, frame: Frame) -> None:
        if isinstance(frame, UserStartedSpeakingFrame):
            self.turn += 1

    def fault(self, turn: int | None = None) -> str | None:
        return self._faults.get(self.turn if turn is None else turn)


async def _hang() -> None:
    """Never answer: wait until the task is cancelled (an interruption, the session's end)."""
    await asyncio.Event().wait()


class BenchmarkSTTService(STTService):
    """Transcribes nothing: a fixed-shape transcript `delay_secs` after each VAD stop."""

    def __init__(self, *, delay_secs: float, faults: tuple[BenchmarkFault, ...] = (), **kwargs):
        super().__init__(
            settings=STTSettings(model="benchmark", language=Language.EN),
            # The turn strategy waits this long for a transcript after the end of speech; the
            # VAD's stop time comes first, so the transcript always lands inside the window.
            ttfs_p99_latency=delay_secs + 0.5,
            **kwargs,
        )
        self._delay_secs = delay_secs
        self._schedule = _FaultSchedule("stt", faults)
        self._speech_bytes = 0
        self._pending: set[asyncio.Task] = set()

    def can_generate_metrics(self) -> bool:
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        self._schedule.count(frame)
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._speech_bytes = 0
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            seconds = self._speech_bytes / 2 / max(self.sample_rate, 1)
            task = self.create_task(self._transcribe(self._schedule.turn, seconds), "benchmark_stt")
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        await super().process_frame(frame, direction)

    async def cleanup(self) -> None:
        for task in list(self._pending):
            await self.cancel_task(task)
        await super().cleanup()

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        if self._user_speaking:
            self._speech_bytes += len(audio)
        return
        yield  # an async generator that yields nothing: the transcript comes from _transcribe

    async def _transcribe(self, turn: int, seconds: float) -> None:
        await asyncio.sleep(self._delay_secs)
        fault = self._schedule.fault(turn)
        if fault == "hang":
            return await _hang()
        if fault == "error":
            return await self.push_error(f"{self}: benchmark fault: STT error in turn {turn}")
        text = f"Benchmark utterance {turn}, {seconds:.1f} seconds of speech."
        await self.push_frame(TranscriptionFrame(text, self._user_id, time_now_iso8601(), Language.EN, finalized=True))


class BenchmarkLLMService(LLMService):
    """Streams `BENCHMARK_REPLY`, its first token `delay_secs` after each request."""

    def __init__(self, *, delay_secs: float, faults: tuple[BenchmarkFault, ...] = (), **kwargs):
        super().__init__(settings=llm_settings("benchmark"), **kwargs)
        self._delay_secs = delay_secs
        self._schedule = _FaultSchedule("llm", faults)

    def can_generate_metrics(self) -> bool:
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        self._schedule.count(frame)
        if not isinstance(frame, LLMContextFrame):
            await self.push_frame(frame, direction)
            return
        await self.push_frame(LLMFullResponseStartFrame())
        await self.start_processing_metrics()
        await self.start_ttfb_metrics()
        # An interruption cancels this task while it waits; the new turn starts afresh.
        await asyncio.sleep(self._delay_secs)
        fault = self._schedule.fault()
        if fault == "hang":
            await _hang()
        elif fault == "error":
            await self.push_error(f"{self}: benchmark fault: LLM error in turn {self._schedule.turn}")
        else:
            await self._reply()
        await self.stop_ttfb_metrics()
        await self.stop_processing_metrics()
        await self.push_frame(LLMFullResponseEndFrame())

    async def _reply(self) -> None:
        words = BENCHMARK_REPLY.split(" ")
        await self.stop_ttfb_metrics()
        for i, word in enumerate(words):
            await self._push_llm_text(word if i == 0 else f" {word}")
        await self.start_llm_usage_metrics(
            LLMTokenUsage(prompt_tokens=0, completion_tokens=len(words), total_tokens=len(words))
        )


@lru_cache(maxsize=4)
def _tone_second(sample_rate: int) -> bytes:
    """One second of the tone (a whole number of cycles, so seconds join without a click)."""
    t = np.arange(sample_rate) / sample_rate
    return (TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16).tobytes()


class BenchmarkTTSService(TTSService):
    """Speaks a quiet tone as long as the text, its first audio `delay_secs` after each
    sentence."""

    def __init__(self, *, delay_secs: float, faults: tuple[BenchmarkFault, ...] = (), **kwargs):
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model="benchmark", voice="tone", language="en"),
            **kwargs,
        )
        self._delay_secs = delay_secs
        self._schedule = _FaultSchedule("tts", faults)

    def can_generate_metrics(self) -> bool:
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        self._schedule.count(frame)
        await super().process_frame(frame, direction)

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        await self.start_tts_usage_metrics(text)
        await asyncio.sleep(self._delay_secs)
        fault = self._schedule.fault()
        if fault == "hang":
            await _hang()
        if fault == "error":
            await self.push_error(f"{self}: benchmark fault: TTS error in turn {self._schedule.turn}")
            return
        await self.stop_ttfb_metrics()
        second = _tone_second(self.sample_rate)
        remaining = int(len(text) * SECONDS_PER_CHARACTER * self.sample_rate) * 2

        async def tone():
            nonlocal remaining
            while remaining > 0:
                chunk = second[: min(remaining, len(second))]
                remaining -= len(chunk)
                yield chunk

        async for frame in self._stream_audio_frames_from_iterator(
            tone(), in_sample_rate=self.sample_rate, context_id=context_id
        ):
            yield frame
