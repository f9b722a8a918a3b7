"""Piper text-to-speech, embedded: one voice per process, shared by every session; it also
renders the apology a failed turn plays."""

import numpy as np
import soxr
from pipecat.processors.frame_processor import FrameProcessor

from bot.providers.base import EmbeddedEngines, Room
from bot.providers.speakable import SPEAKABLE_TEXT
from bot.settings import Provider, Settings


def describe(settings: Settings) -> str:
    return f"embedded:piper-{settings.tts_voice}"


def load(settings: Settings):
    from bot.providers.piper.voice import SharedPiperVoice

    voice = SharedPiperVoice(settings.tts_voice, threads=settings.tts_threads)
    voice.warm_up()
    return voice


def render(settings: Settings, text: str, voice, sample_rate: int) -> bytes:
    """`text` spoken by the embedded voice (loaded just for this, and dropped, when `voice` is
    None: a cloud TTS may be the stage that failed), as 16-bit mono PCM at `sample_rate`."""
    from bot.providers.piper.voice import SharedPiperVoice

    voice = voice or SharedPiperVoice(settings.tts_voice, threads=1)
    pcm = np.frombuffer(b"".join(voice.synthesize(text)), dtype=np.int16)
    if voice.sample_rate != sample_rate:
        pcm = soxr.resample(pcm, voice.sample_rate, sample_rate).astype(np.int16)
    return pcm.tobytes()


def create(_settings: Settings, engines: EmbeddedEngines) -> FrameProcessor:
    from bot.providers.piper.service import SharedPiperTTSService

    return SharedPiperTTSService(voice=engines.tts, text_transforms=SPEAKABLE_TEXT)


ROOM = Room(
    stage="tts",
    provider=Provider.EMBEDDED,
    describe=describe,
    create=create,
    model=lambda voice: voice.name,
    load=load,
    threads=lambda settings: settings.tts_threads,
)
