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

The decode started at the pause is the final transcript too, when the user said nothing more
before the VAD's stop: it holds every word, padded with the same silence as the final segment,
and it started `stop_secs` earlier. The final segment differs only by those quiet windows, so
decoding it again would repeat the work on the turn's critical path (0.15-0.27 s with four
sessions on 2 cores).

A request is decoded whole. People dictate with pauses ("a bar chart of monthly sales: ...
January 10, ... February 20"), and each pause ends a VAD segment; Moonshine hears "January 10"
alone as "Can you ever return?" and the whole request correctly. So while a request goes on
(until the user hears an answer, pauses longer than `REQUEST_MAX_GAP_SECS` or it passes
`REQUEST_MAX_SECS`), its parts are kept with short gaps between them, and every decode after
its first part covers all of them, pushed as `RequestTranscriptionFrame` /
`RequestInterimTranscriptionFrame`: they replace the parts transcribed before (the user
aggregator, the turn stop strategy and the turn recorder read them so). When a whole decode
hears nothing, the part is transcribed alone, as a plain transcript.
"""

import asyncio
import threading
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr
from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
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

from bot.frames import (
    ReplyUnheardFrame,
    RequestInterimTranscriptionFrame,
    RequestTranscriptionFrame,
    UserSpeechPausedFrame,
    UserSpeechResumedFrame,
)
from bot.providers.moonshine.engine import MoonshineEngine, TranscriptionCancelled
from bot.providers.moonshine.model import MODEL_NAME, SAMPLE_RATE

# Time from end of speech to the final transcript with VAD stop_secs=0.2 (Pipecat's TTFS), as
# this service's TTFB metric reported it on 2 cores: 0.28-0.42 s for 1.7-6 s utterances, of which
# 0.2 s is the VAD's wait. The P99 allows for longer turns and a CPU shared with the LLM and TTS.
MOONSHINE_TTFS_P99_SECS = 0.5

# Audio a pause's decode may leave out and still stand for the final segment: the VAD's
# `stop_secs` of quiet windows, plus this much for the windows' and frames' granularity. More
# means the VAD heard speech again that the analyzer's states did not show (several windows in
# one frame): the segment is then decoded.
PAUSE_TO_STOP_SLACK_SECS = 0.1

# A later part of a request keeps this much audio from before the VAD heard it start (the VAD's
# start delay, 0.2 s, and a margin): the gaps between parts stay short, as Moonshine ends its
# transcript early at a long silence.
REQUEST_LEAD_SECS = 0.35
# Quiet after which the next words are a new request, even with no answer heard in between.
REQUEST_MAX_GAP_SECS = 3.0
# The longest request decoded whole (Moonshine's single pass); past it, parts are decoded alone.
REQUEST_MAX_SECS = 20.0


@dataclass
class _PauseDecode:
    """The decode of every word heard when the user went quiet."""

    task: asyncio.Task  # -> the text, None when cancelled or failed
    cancel: threading.Event
    audio_bytes: int  # the decoded buffer's length then, without the padding
    whole: bool  # it decoded the whole request, not only the current part


@dataclass
class _Final:
    """What stands for a segment queued at a VAD stop."""

    pause: _PauseDecode | None  # the decode started at the pause, if it has every word
    request: bytes | None  # the whole request to decode instead of the segment, if any


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
        cpu_busy: Callable[[], bool] | None = None,
        ttfs_p99_latency: float = MOONSHINE_TTFS_P99_SECS,
        **kwargs: Any,
    ) -> None:
        """Create the service.

        Args:
            engine: The process-wide Moonshine engine.
            interim_interval_secs: Seconds of new speech between interim decodes; 0 disables
                interim transcripts.
            cpu_busy: While it returns True, the interval interims are skipped: the CPU this
                engine shares is computing a reply someone is waiting for. The decode at a
                pause still runs (it is the final transcript).
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
        self._cpu_busy = cpu_busy
        self._interim_task: asyncio.Task | None = None
        self._pause: _PauseDecode | None = None
        # For each segment queued at a VAD stop, in order: what stands for it.
        self._finals: deque[_Final] = deque()
        self._request = bytearray()  # the request's parts so far, with short gaps
        self._request_open = False
        self._request_parts = 0  # its parts the VAD has ended
        self._request_quiet_bytes = 0  # audio since its last part ended
        self._answer_heard = False  # a reply played since the request's last part
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
        await self._drop_pause()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        """Drop any interim decode and queued segment at once."""
        await self._cancel_interim()
        await self._drop_pause()
        for final in self._finals:
            await self._drop_pause(final.pause)
        self._finals.clear()
        self._close_request()
        await super().cancel(frame)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Reset interim state per utterance and stop a partial as soon as speech ends."""
        if isinstance(frame, ReplyUnheardFrame):
            self._answer_heard = False  # the user went on with the request over it
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            await self._cancel_interim()
            await self._drop_pause()
            if self._answer_heard:
                self._close_request()  # what the user says now is new
            self._open_request_part()
            self._interim_tick_bytes = len(self._audio_buffer)
            self._last_interim_text = ""
            self._interim_failed = False
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            # The base class queues the final decode right after this; a partial still running
            # would only compete with it for the CPU, and its text would be stale.
            await self._cancel_interim()
            if self.is_usable:  # otherwise the base class queues no segment
                request = self._end_request_part()
                pause = await self._pause_for_final(frame.stop_secs, whole=request is not None)
                self._finals.append(_Final(pause, request))
        elif isinstance(frame, UserSpeechPausedFrame) and self._user_speaking:
            # The turn may be ending: an interim of every word heard replaces one still decoding
            # older audio. Padded like the final segment, the last word decodes as it will then.
            await self._cancel_interim()
            await self._drop_pause()
            self._start_pause_decode()
        elif isinstance(frame, UserSpeechResumedFrame):
            await self._drop_pause()  # it misses the words now being spoken
        elif isinstance(frame, BotStartedSpeakingFrame):
            # Heard, unless the user's next words began before they could hear it (see
            # `bot.processors.unheard_reply`): that is decided when the words start.
            self._answer_heard = True
        await super().process_frame(frame, direction)

    # --- the request, kept whole across its parts ----------------------------------------

    def _open_request_part(self) -> None:
        """The VAD heard speech start: a new request, or the next part of the open one."""
        bytes_per_sec = 2 * self.sample_rate
        if self._request_open and (
            self._request_quiet_bytes > REQUEST_MAX_GAP_SECS * bytes_per_sec
            or len(self._request) > REQUEST_MAX_SECS * bytes_per_sec
        ):
            self._close_request()
        if not self._request_open:
            self._request = bytearray(self._audio_buffer)  # the pre-roll, as the segment has
            self._request_open, self._request_parts = True, 0
        else:
            lead = int(REQUEST_LEAD_SECS * self.sample_rate) * 2
            self._request += self._audio_buffer[-lead:]
        self._request_quiet_bytes = 0

    def _end_request_part(self) -> bytes | None:
        """The VAD ended a part: the whole request to decode in its place, when there is more
        to it than this part."""
        if not self._request_open:
            return None
        self._request_parts += 1
        return bytes(self._request) if self._request_parts > 1 else None

    def _close_request(self) -> None:
        self._request = bytearray()
        self._request_open, self._request_parts, self._request_quiet_bytes = False, 0, 0
        self._answer_heard = False

    @property
    def _decodes_request(self) -> bool:
        """Whether decodes now cover the whole request (an earlier part of it was heard)."""
        return self._request_open and self._request_parts > 0

    def _current_audio(self) -> bytearray:
        return self._request if self._decodes_request else self._audio_buffer

    async def process_audio_frame(self, frame: InputAudioRawFrame, direction: FrameDirection) -> None:
        """Buffer audio (base class) and start an interim decode every interval of speech."""
        await super().process_audio_frame(frame, direction)
        if self._request_open:
            if self._user_speaking:
                self._request += frame.audio
            else:
                self._request_quiet_bytes += len(frame.audio)
                if self._request_quiet_bytes > REQUEST_MAX_GAP_SECS * 2 * self.sample_rate:
                    self._close_request()
        if (
            not self._user_speaking
            or self._interim_interval_secs <= 0
            or self._interim_failed
            or self._pause is not None  # quiet since: that decode has every word
        ):
            return
        interval_bytes = int(self._interim_interval_secs * self.sample_rate) * 2
        if len(self._audio_buffer) - self._interim_tick_bytes < interval_bytes:
            return
        if self._cpu_busy is not None and self._cpu_busy():
            return  # the next frame asks again: the interim starts once the CPU is free
        self._start_interim()

    def _start_interim(self) -> None:
        if self._interim_interval_secs <= 0 or self._interim_failed:
            return
        self._interim_tick_bytes = len(self._audio_buffer)
        # At most one interim decode per session: when the previous one is still running,
        # this tick is skipped rather than queued, so interims never pile up behind each other.
        if self._interim_task is None or self._interim_task.done():
            self._interim_cancel = threading.Event()
            self._interim_task = self.create_task(
                self._run_interim(bytes(self._current_audio()), self._interim_cancel, self._decodes_request),
                name="moonshine_interim",
            )

    def _start_pause_decode(self) -> None:
        if self._interim_interval_secs <= 0 or self._interim_failed:
            return
        whole = self._decodes_request
        audio = self._current_audio()
        cancel = threading.Event()
        task = self.create_task(
            self._run_interim(bytes(audio) + self._trailing_silence(), cancel, whole),
            name="moonshine_pause",
        )
        self._pause = _PauseDecode(task, cancel, len(audio), whole)

    async def _pause_for_final(self, stop_secs: float, *, whole: bool) -> _PauseDecode | None:
        """The current pause's decode, if it can stand for what the VAD just ended: the
        segment, or the `whole` request."""
        pause, self._pause = self._pause, None
        if pause is None:
            return None
        audio = self._request if whole else self._audio_buffer
        unheard_secs = (len(audio) - pause.audio_bytes) / (2 * self.sample_rate)
        if pause.whole != whole or unheard_secs > stop_secs + PAUSE_TO_STOP_SLACK_SECS:
            await self._drop_pause(pause)
            return None
        return pause

    async def _drop_pause(self, pause: _PauseDecode | None = None) -> None:
        if pause is None:
            pause, self._pause = self._pause, None
        if pause is None:
            return
        pause.cancel.set()
        if not pause.task.done():
            await self.cancel_task(pause.task)

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        """Transcribe one finished segment (16-bit mono PCM at `self.sample_rate`)."""
        await self.start_processing_metrics()
        final = self._finals.popleft() if self._finals else _Final(None, None)
        whole = final.request is not None
        try:
            text = await final.pause.task if final.pause is not None else None
            if text is None:  # no pause decode, or it was cancelled or failed
                pcm = final.request + self._trailing_silence() if final.request is not None else audio
                text = await asyncio.to_thread(self._transcribe, pcm, None)
            if whole and not text:  # the whole request decoded to nothing: this part alone
                whole = False
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
        frame_class = RequestTranscriptionFrame if whole else TranscriptionFrame
        yield frame_class(text, self._user_id, time_now_iso8601(), Language.EN)

    @traced_stt
    async def _handle_transcription(self, transcript: str, is_final: bool, language: Language | None = None) -> None:
        """Hook for Pipecat's OpenTelemetry tracing, which records the arguments when enabled."""

    async def _run_interim(self, pcm: bytes, cancel: threading.Event, whole: bool) -> str | None:
        try:
            text = await asyncio.to_thread(self._transcribe, pcm, cancel)
        except TranscriptionCancelled:
            return None
        except Exception as e:
            self._interim_failed = True
            await self.push_error(f"{self}: interim transcription failed: {e}", exception=e)
            return None
        if text and text != self._last_interim_text:
            self._last_interim_text = text
            frame_class = RequestInterimTranscriptionFrame if whole else InterimTranscriptionFrame
            await self.push_frame(frame_class(text, self._user_id, time_now_iso8601(), Language.EN))
        return text

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
