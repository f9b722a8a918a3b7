"""Spoken test input, synthesized offline with the embedded Piper voice."""

from functools import lru_cache

import numpy as np
import soxr

from bot.engines.piper_voice import SharedPiperVoice


@lru_cache(maxsize=1)
def _voice() -> SharedPiperVoice:
    return SharedPiperVoice("en_US-joe-medium", threads=1)


@lru_cache(maxsize=64)
def speech_pcm(text: str, sample_rate: int = 16000) -> bytes:
    """16-bit mono PCM of `text` spoken at `sample_rate`."""
    voice = _voice()
    pcm = np.frombuffer(b"".join(voice.synthesize(text)), dtype=np.int16)
    return soxr.resample(pcm, voice.sample_rate, sample_rate).astype(np.int16).tobytes()


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
