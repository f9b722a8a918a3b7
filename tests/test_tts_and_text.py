"""The shared Piper TTS service with the real voice, and the speakable-text transforms it is
given."""

import asyncio
import re

import numpy as np
import pytest
from pipecat.frames.frames import (
    ErrorFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.worker import PipelineParams
from pipecat.tests.utils import run_test

from bot.providers.piper.service import SharedPiperTTSService
from bot.providers.piper.voice import SharedPiperVoice, voice_files
from bot.providers.speakable import SPEAKABLE_TEXT, strip_emoji


@pytest.fixture(scope="session")
def voice() -> SharedPiperVoice:
    return SharedPiperVoice("en_US-joe-medium")


class RecordingVoice:
    """The real voice, recording the text the TTS service asks it to speak."""

    def __init__(self, voice: SharedPiperVoice):
        self._voice = voice
        self.name = voice.name
        self.sample_rate = voice.sample_rate
        self.spoken: list[str] = []

    def synthesize(self, text: str) -> list[bytes]:
        self.spoken.append(text)
        return self._voice.synthesize(text)


def _voiced_seconds(frames: list[TTSAudioRawFrame], rate: int) -> float:
    """Seconds of 20 ms windows louder than a whisper (RMS over ~-40 dBFS)."""
    pcm = np.frombuffer(b"".join(f.audio for f in frames), dtype=np.int16).astype(np.float32)
    window = rate // 50
    windows = pcm[: len(pcm) // window * window].reshape(-1, window)
    rms = np.sqrt((windows**2).mean(axis=1))
    return float((rms > 300).sum()) * 0.02


async def _speak(service, text: str, out_rate: int):
    return await asyncio.wait_for(
        run_test(
            service,
            frames_to_send=[TTSSpeakFrame(text)],
            pipeline_params=PipelineParams(audio_out_sample_rate=out_rate),
        ),
        timeout=60,
    )


@pytest.mark.model
@pytest.mark.parametrize("out_rate", [24000, 16000])
async def test_piper_service_speaks_at_the_pipeline_rate(voice, out_rate):
    assert voice.sample_rate == 22050  # so the service really resamples
    service = SharedPiperTTSService(voice=voice)
    down, up = await _speak(service, "Hello there, it is nice to meet you.", out_rate)
    assert not [f for f in down + up if isinstance(f, ErrorFrame)], up

    kinds = [type(f) for f in down]
    assert kinds.count(TTSStartedFrame) == 1 and kinds.count(TTSStoppedFrame) == 1, kinds
    start, stop = kinds.index(TTSStartedFrame), kinds.index(TTSStoppedFrame)
    audio = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert audio
    assert all(start < down.index(f) < stop for f in audio)
    assert {f.sample_rate for f in audio} == {out_rate}
    assert {f.num_channels for f in audio} == {1}
    total = sum(len(f.audio) for f in audio) / 2 / out_rate
    assert 0.5 <= total < 5.0, total
    assert _voiced_seconds(audio, out_rate) >= 0.5
    context_ids = {f.context_id for f in audio}
    assert context_ids == {down[start].context_id} == {down[stop].context_id}


@pytest.mark.model
async def test_piper_service_speaks_only_speakable_text(voice):
    recorder = RecordingVoice(voice)
    service = SharedPiperTTSService(voice=recorder, text_transforms=SPEAKABLE_TEXT)
    down, up = await _speak(service, "**Sure!** Here's a list:\n- one 😀", 24000)
    assert not [f for f in down + up if isinstance(f, ErrorFrame)], up
    assert recorder.spoken, "the voice was never asked to speak"
    spoken = " ".join(recorder.spoken)
    assert "Sure!" in spoken and "one" in spoken
    assert "*" not in spoken and "😀" not in spoken
    assert not re.search(r"(^|\n)\s*-\s", spoken), spoken
    audio = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert _voiced_seconds(audio, 24000) >= 0.5


@pytest.mark.unit
def test_voice_files_exist_and_unknown_voice_is_rejected():
    model, config = voice_files("en_US-joe-medium")
    assert model.exists() and config.exists()
    with pytest.raises(ValueError):
        voice_files("en_US-nobody-low")


@pytest.mark.model
def test_voice_synthesizes_one_chunk_per_sentence(voice):
    chunks = voice.synthesize("One sentence. Another one here.")
    assert len(chunks) == 2
    assert all(len(c) > 0 and len(c) % 2 == 0 for c in chunks)


# --- SPEAKABLE_TEXT ---------------------------------------------------------------------------


async def _speakable(text: str) -> str:
    for _, transform in SPEAKABLE_TEXT:
        text = await transform(text, "sentence")
    return text


@pytest.mark.unit
async def test_speakable_text_strips_markdown_bullets_and_emoji():
    out = await _speakable("**Sure!** Here's a list:\n- one 😀")
    assert "*" not in out
    assert not re.search(r"(^|\n)\s*-\s", out), out
    assert "😀" not in out
    assert "Sure!" in out and "Here's a list:" in out and "one" in out


@pytest.mark.unit
@pytest.mark.parametrize(
    "text, expected",
    [
        ("Great job 👍🏽!", "Great job !"),
        ("Flags 🇫🇷 and ❤️ love", "Flags  and  love"),
        ("Family 👨‍👩‍👧 time", "Family  time"),
        ("Sun ☀ and snow ❄", "Sun  and snow "),
        ("Plain text, 42 * 3 - 1 = 125.", "Plain text, 42 * 3 - 1 = 125."),
        ("Café naïve — ok", "Café naïve — ok"),
    ],
)
async def test_strip_emoji(text, expected):
    assert await strip_emoji(text, "sentence") == expected


@pytest.mark.unit
async def test_speakable_text_keeps_arithmetic_and_hyphens():
    out = await _speakable("It costs 2*3 = 6 dollars, a well-known fact.")
    assert "2" in out and "6 dollars" in out and "well-known" in out


@pytest.mark.unit
def test_leading_silence_is_trimmed_to_a_short_lead_in():
    from bot.providers.piper.voice import LEAD_IN_SECS, trim_leading_silence

    rate = 22050
    tone = (np.sin(np.arange(rate) / 5) * 8000).astype(np.int16)
    pcm = np.concatenate([np.zeros(rate // 4, np.int16), tone]).tobytes()
    trimmed = np.frombuffer(trim_leading_silence(pcm, rate), np.int16)
    lead = np.flatnonzero(np.abs(trimmed) > 200)[0] / rate
    assert abs(lead - LEAD_IN_SECS) < 0.002
    assert abs(len(trimmed) - len(tone) - LEAD_IN_SECS * rate) <= 2
    assert trim_leading_silence(bytes(1000), rate) == bytes(1000)  # all silence: unchanged


@pytest.mark.model
async def test_sessions_synthesize_side_by_side(voice):
    """A short sentence is not held up by another session's long answer (only espeak-ng's
    phonemizer is taken one at a time), and concurrent renditions are the ones each would
    get alone."""
    from client.speech import REPEATABLE

    long_text = " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 8)
    short_text = "Hello there."
    alone = voice.synthesize(short_text, REPEATABLE)
    finished: list[str] = []

    def synthesize(name: str, text: str) -> list[bytes]:
        chunks = voice.synthesize(text, REPEATABLE)
        finished.append(name)
        return chunks

    long_task = asyncio.create_task(asyncio.to_thread(synthesize, "long", long_text))
    await asyncio.sleep(0.05)  # the long answer is being synthesized
    short = await asyncio.to_thread(synthesize, "short", short_text)
    await long_task
    assert finished == ["short", "long"]
    assert short == alone


@pytest.mark.unit
@pytest.mark.parametrize(
    "text, pieces",
    [
        ("The capital of France is Paris.", ["The capital of France is Paris."]),
        (
            "Here is a bar chart of monthly sales: March is highest at 30, January lowest at 10.",
            ["Here is a bar chart of monthly sales:", "March is highest at 30, January lowest at 10."],
        ),
        (
            "The server process is using 1,690 megabytes of memory, and at most 1,803 over the last minute.",
            ["The server process is using 1,690 megabytes of memory,", "and at most 1,803 over the last minute."],
        ),
        # Sentences end where Pipecat's own sentence splitter says ("Dr." does not end one).
        ("Dr. Smith said hello. Then he left.", ["Dr. Smith said hello.", "Then he left."]),
        # A clause of fewer than three words is not worth its own rendering.
        (
            "Yes, the largest planet in our solar system is Jupiter by far.",
            ["Yes, the largest planet in our solar system is Jupiter by far."],
        ),
    ],
)
def test_piper_starts_a_long_first_sentence_from_its_first_clause(text, pieces):
    from bot.providers.piper.service import speaking_pieces

    assert speaking_pieces(text) == pieces
