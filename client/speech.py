"""Spoken test input, synthesized offline: Piper's Joe (the bot's own voice) and espeak-ng's
voices (Debian's package), each at more than one speaking rate, with pauses where asked."""

import dataclasses
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import soxr
from piper.config import SynthesisConfig

from bot.providers.piper.voice import SharedPiperVoice

MIC_RATE = 16000
# Piper draws random noise for each rendition, so the same sentence sounded (and transcribed)
# differently from run to run; without the noise every run hears the same clip.
REPEATABLE = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)


@dataclass(frozen=True)
class Voice:
    """A synthetic speaker at one speaking rate.

    `engine` "piper": `speaker` is a Piper voice and `rate` its length_scale (above 1 is
    slower); "espeak": `speaker` is an espeak-ng voice and `rate` words per minute."""

    name: str
    engine: Literal["piper", "espeak"]
    speaker: str
    rate: float


VOICES = {
    voice.name: voice
    for voice in (
        Voice("joe", "piper", "en_US-joe-medium", 1.0),
        Voice("joe-slow", "piper", "en_US-joe-medium", 1.3),
        Voice("us", "espeak", "en-us", 165),
        Voice("us-slow", "espeak", "en-us", 125),
        Voice("rp", "espeak", "en-gb-x-rp", 175),
        Voice("rp-slow", "espeak", "en-gb-x-rp", 135),
        # Never used while tuning: its figures are reported apart, as a held-out voice.
        Voice("scottish", "espeak", "en-gb-scotland", 160),
        Voice("scottish-slow", "espeak", "en-gb-scotland", 125),
    )
}
HELD_OUT = ("scottish", "scottish-slow")
JOE = VOICES["joe"]


@lru_cache(maxsize=1)
def _piper() -> SharedPiperVoice:
    return SharedPiperVoice("en_US-joe-medium", threads=1)


def _piper_pcm(text: str, length_scale: float, sample_rate: int) -> bytes:
    config = dataclasses.replace(REPEATABLE, length_scale=length_scale)
    voice = _piper()
    pcm = np.frombuffer(b"".join(voice.synthesize(text, config)), dtype=np.int16)
    return soxr.resample(pcm, voice.sample_rate, sample_rate).astype(np.int16).tobytes()


@lru_cache(maxsize=256)
def espeak_pcm(text: str, voice: str = "en-us", speed: int = 160, sample_rate: int = MIC_RATE) -> bytes:
    """s16 mono speech of `text` by espeak-ng at `speed` words per minute."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("spoken input needs espeak-ng (apt-get install espeak-ng; ./test.sh does)")
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = Path(tmp) / "speech.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(int(speed)), "-w", str(wav_path), "--", text],
            check=True,
            capture_output=True,
            timeout=30,
        )
        with wave.open(str(wav_path)) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return soxr.resample(pcm, rate, sample_rate).astype(np.int16).tobytes()


@lru_cache(maxsize=256)
def speech_pcm(text: str, sample_rate: int = MIC_RATE, voice: Voice = JOE) -> bytes:
    """16-bit mono PCM of `text` spoken by `voice` at `sample_rate`, the same in every run."""
    if voice.engine == "piper":
        return _piper_pcm(text, voice.rate, sample_rate)
    return espeak_pcm(text, voice.speaker, int(voice.rate), sample_rate)


def dictation_pcm(
    parts: tuple[str, ...], pauses: tuple[float, ...], voice: Voice = JOE, sample_rate: int = MIC_RATE
) -> bytes:
    """One request spoken in `parts`, with `pauses[i]` seconds of silence after part i: how
    people dictate ("a bar chart of monthly sales: ... January 10, ... February 20")."""
    pcm = bytearray()
    for i, part in enumerate(parts):
        pcm += _trimmed(speech_pcm(part, sample_rate, voice), sample_rate)
        if i < len(parts) - 1:
            pcm += bytes(int(pauses[i % len(pauses)] * sample_rate) * 2)
    return bytes(pcm) + bytes(int(0.3 * sample_rate) * 2)


def _trimmed(pcm: bytes, sample_rate: int, threshold: int = 300) -> bytes:
    """`pcm` without the synthesizer's own silence at either end, so a pause is what is asked."""
    samples = np.frombuffer(pcm, dtype=np.int16)
    voiced = np.flatnonzero(np.abs(samples) > threshold)
    if not voiced.size:
        return pcm
    margin = int(0.03 * sample_rate)
    return samples[max(0, voiced[0] - margin) : voiced[-1] + 1 + margin].tobytes()


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


def trailing_silence_seconds(pcm: bytes, sample_rate: int = MIC_RATE, threshold: int = 300) -> float:
    """How long the clip is silent at its end (speech ends this long before the clip does)."""
    samples = np.abs(np.frombuffer(pcm, dtype=np.int16))
    voiced = np.nonzero(samples > threshold)[0]
    last = voiced[-1] + 1 if voiced.size else 0
    return (samples.size - last) / sample_rate
