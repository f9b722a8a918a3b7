"""Pipecat STT service on the embedded Moonshine engine, with interim transcripts.

`SegmentedSTTService` does the VAD bookkeeping: it keeps ~1 s of pre-roll, grows the buffer
while the user speaks, pads the finished segment with trailing silence, reports usage, and
transcribes queued segments in order on its own task (`run_stt`). It also measures STT TTFB the
Pipecat way: from the end of speech (VAD stop minus `stop_secs`) to the finalized
`TranscriptionFrame`.

On top of that, this service re-decodes the growing buffer every `interim_interval_secs` of new
speech, and when the user first goes quiet (`UserSpeechPausedFrame`), and pushes
`InterimTranscriptionFrame`s. Moonshine decodes a few seconds of audio in tens
of milliseconds, so this costs little CPU and gives the client live captions. A partial decode
still running when the VAD reports the end of speech is cancelled, so the final decode has the
CPU to itself.
"""

import asyncio
import threading
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np
import soxr
from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601
from pipecat.utils.tracing.service_decorators import traced_stt

from bot.engines.moonshine import MODEL_NAME, SAMPLE_RATE, MoonshineEngine, TranscriptionCancelled
from bot.processors.speech_pause import UserSpeechPausedFrame

# Time from end of speech to the final transcript with VAD stop_secs=0.2 (Pipecat's TTFS), as
# this service's TTFB metric reported it on 2 cores: 0.28-0.42 s for 1.7-6 s utterances, of which
# 0.2 s is the VAD's wait. The P99 allows for longer turns and a CPU shared with the LLM and TTS.
MOONSHINE_TTFS_P99_SECS = 0.5


class MoonshineSTTService(SegmentedSTTService):
    """English speech-to-text with Moonshine base, run in-process on the CPU.

    One `MoonshineEngine` is shared by every session of the server; each service instance keeps
    its own buffer and at most one interim decode in flight.
    """

    def __init__(
        self,
        *,
        engine: MoonshineEngine,
        interim_interval_secs: float = 0.5,
        ttfs_p99_latency: float = MOONSHINE_TTFS_P99_SECS,
        **kwargs: Any,
    ) -> None:
        """Create the service.

        Args:
            engine: The process-wide Moonshine engine.
            interim_interval_secs: Seconds of new speech between interim decodes; 0 disables
                interim transcripts.
            ttfs_p99_latency: P99 seconds from end of speech to final transcript, broadcast to
                the turn strategies.
            **kwargs: Passed to `SegmentedSTTService` (e.g. `trailing_silence_secs`).
        """
        super().__init__(
            settings=STTSettings(model=MODEL_NAME, language=Language.EN),
            ttfs_p99_latency=ttfs_p99_latency,
            **kwargs,
        )
        self._engine = engine
        self._interim_interval_secs = interim_interval_secs
        self._interim_task: asyncio.Task | None = None
        # Set to make the worker thread of `_interim_task` stop at its next decoder step:
        # cancelling the asyncio task alone would leave the thread decoding.
        self._interim_cancel = threading.Event()
        # Buffer length (bytes) at the last interim tick, whether or not it started a decode.
        self._interim_tick_bytes = 0
        self._last_interim_text = ""
        # After an interim decode fails, the rest of the utterance waits for the final decode
        # rather than report the same error every tick.
        self._interim_failed = False

    @property
    def wants_wav_segments(self) -> bool:
        """Receive segments as raw 16-bit PCM, which is what the engine decodes."""
        return False

    def can_generate_metrics(self) -> bool:
        """Report TTFB, processing and usage metrics."""
        return True

    async def stop(self, frame: EndFrame) -> None:
        """Drop any interim decode, then transcribe what is queued and stop."""
        await self._cancel_interim()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        """Drop any interim decode and queued segment at once."""
        await self._cancel_interim()
        await super().cancel(frame)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Reset interim state per utterance and stop a partial as soon as speech ends."""
        if isinstance(frame, VADUserStartedSpeakingFrame):
            await self._cancel_interim()
            self._interim_tick_bytes = len(self._audio_buffer)
            self._last_interim_text = ""
            self._interim_failed = False
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            # The base class queues the final decode right after this; a partial still running
            # would only compete with it for the CPU, and its text would be stale.
            await self._cancel_interim()
        elif isinstance(frame, UserSpeechPausedFrame) and self._user_speaking:
            # The turn may be ending: an interim of every word heard replaces one still decoding
            # older audio. Padded like the final segment, the last word decodes as it will then.
            await self._cancel_interim()
            self._start_interim(self._trailing_silence())
        await super().process_frame(frame, direction)

    async def process_audio_frame(
        self, frame: InputAudioRawFrame, direction: FrameDirection
    ) -> None:
        """Buffer audio (base class) and start an interim decode every interval of speech."""
        await super().process_audio_frame(frame, direction)
        if not self._user_speaking or self._interim_interval_secs <= 0 or self._interim_failed:
            return
        interval_bytes = int(self._interim_interval_secs * self.sample_rate) * 2
        if len(self._audio_buffer) - self._interim_tick_bytes < interval_bytes:
            return
        self._start_interim()

    def _start_interim(self, padding: bytes = b"") -> None:
        if self._interim_interval_secs <= 0 or self._interim_failed:
            return
        self._interim_tick_bytes = len(self._audio_buffer)
        # At most one interim decode per session: when the previous one is still running,
        # this tick is skipped rather than queued, so interims never pile up behind each other.
        if self._interim_task is None or self._interim_task.done():
            self._interim_cancel = threading.Event()
            self._interim_task = self.create_task(
                self._run_interim(bytes(self._audio_buffer) + padding, self._interim_cancel),
                name="moonshine_interim",
            )

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        """Transcribe one finished segment (16-bit mono PCM at `self.sample_rate`)."""
        await self.start_processing_metrics()
        try:
            text = await asyncio.to_thread(self._transcribe, audio, None)
        except Exception as e:
            await self.stop_processing_metrics()
            await self.push_error(f"{self}: transcription failed: {e}", exception=e)
            return
        await self.stop_processing_metrics()
        if not text:
            return
        logger.debug(f"{self}: transcription [{text}]")
        await self._handle_transcription(text, is_final=True, language=Language.EN)
        # SegmentedSTTService marks it finalized, which closes the TTFB measurement.
        yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), Language.EN)

    @traced_stt
    async def _handle_transcription(
        self, transcript: str, is_final: bool, language: Language | None = None
    ) -> None:
        """Hook for Pipecat's OpenTelemetry tracing, which records the arguments when enabled."""

    async def _run_interim(self, pcm: bytes, cancel: threading.Event) -> None:
        try:
            text = await asyncio.to_thread(self._transcribe, pcm, cancel)
        except TranscriptionCancelled:
            return
        except Exception as e:
            self._interim_failed = True
            await self.push_error(f"{self}: interim transcription failed: {e}", exception=e)
            return
        if text and text != self._last_interim_text:
            self._last_interim_text = text
            await self.push_frame(
                InterimTranscriptionFrame(text, self._user_id, time_now_iso8601(), Language.EN)
            )

    async def _cancel_interim(self) -> None:
        if self._interim_task is None:
            return
        self._interim_cancel.set()
        if not self._interim_task.done():
            await self.cancel_task(self._interim_task)
        self._interim_task = None

    def _transcribe(self, pcm: bytes, cancel: threading.Event | None) -> str:
        """Decode 16-bit PCM at the pipeline's input rate; runs in a worker thread."""
        samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        if self.sample_rate != SAMPLE_RATE:
            samples = soxr.resample(samples, self.sample_rate, SAMPLE_RATE).astype(np.float32)
        return self._engine.transcribe(samples, cancel)
