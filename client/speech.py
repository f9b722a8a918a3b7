"""Spoken test input, synthesized offline with the embedded Piper voice."""

from functools import lru_cache

import numpy as np
import soxr
from piper.config import SynthesisConfig

from bot.engines.piper_voice import SharedPiperVoice


@lru_cache(maxsize=1)
def _voice() -> SharedPiperVoice:
    return SharedPiperVoice("en_US-joe-medium", threads=1)


# Piper draws random noise for each rendition, so the same sentence sounded (and transcribed)
# differently from run to run; without the noise every run hears the same clip.
REPEATABLE = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)


@lru_cache(maxsize=64)
def speech_pcm(text: str, sample_rate: int = 16000) -> bytes:
    """16-bit mono PCM of `text` spoken at `sample_rate`, the same in every run."""
    voice = _voice()
    pcm = np.frombuffer(b"".join(voice.synthesize(text, REPEATABLE)), dtype=np.int16)
    return soxr.resample(pcm, voice.sample_rate, sample_rate).astype(np.int16).tobytes()


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


def trailing_silence_seconds(pcm: bytes, sample_rate: int = 16000, threshold: int = 300) -> float:
    """How long the clip is silent at its end (speech ends this long before the clip does)."""
    samples = np.abs(np.frombuffer(pcm, dtype=np.int16))
    voiced = np.nonzero(samples > threshold)[0]
    last = voiced[-1] + 1 if voiced.size else 0
    return (samples.size - last) / sample_rate
