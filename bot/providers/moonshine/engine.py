"""Moonshine base-en at run time: loads the graphs `conversion.py` wrote and decodes greedily.
One engine is shared by every session of the process; onnxruntime's `InferenceSession.run` is
thread-safe and all decoding state is local to a call, so `transcribe` may run in several
threads at once.
"""

import math
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from loguru import logger

from bot.providers.moonshine.conversion import prepare_moonshine
from bot.providers.moonshine.model import MODEL_NAME, SAMPLE_RATE

# Token ids fixed by the Moonshine tokenizer: 0 <unk>, 1 <s>, 2 </s>; 3..258 are raw bytes.
_BOS_ID = 1
_EOS_ID = 2
_FIRST_TEXT_ID = 3

# Speech rarely exceeds ~4 tokens per second; the cap stops a hallucinating decoder from
# looping until the end of its context.
_MAX_TOKENS_PER_SECOND = 6.5
_MIN_TOKEN_CAP = 4

# Decode cost grows faster than linearly with length (30 s takes ~10x as long as 10 s), so audio
# longer than _SINGLE_PASS_MAX_SECS is decoded in chunks, each cut at the quietest moment between
# _MIN_CHUNK_SECS and _MAX_CHUNK_SECS so that a cut rarely splits a word.
_SINGLE_PASS_MAX_SECS = 20.0
_MIN_CHUNK_SECS = 10.0
_MAX_CHUNK_SECS = 15.0
_CUT_WINDOW_SECS = 0.05
_CUT_SPAN_SECS = 0.4


class TranscriptionCancelled(Exception):
    """Raised by `MoonshineEngine.transcribe` when its `cancel` event is set mid-decode."""


def _load_vocabulary(path: Path) -> list[bytes]:
    """Token byte strings of `tokenizer.bin`: each is a 1-2 byte varint length, then the bytes."""
    data = path.read_bytes()
    tokens: list[bytes] = []
    i = 0
    while i < len(data):
        length = data[i]
        i += 1
        if length >= 0x80:
            length = (length & 0x7F) | (data[i] << 7)
            i += 1
        tokens.append(data[i : i + length])
        i += length
    return tokens


def _split_long_audio(samples: np.ndarray) -> list[np.ndarray]:
    """`samples` as one chunk, or, when longer than _SINGLE_PASS_MAX_SECS, as chunks each cut in
    the quietest _CUT_SPAN_SECS between _MIN_CHUNK_SECS and _MAX_CHUNK_SECS."""
    window = int(_CUT_WINDOW_SECS * SAMPLE_RATE)
    windows_per_span = round(_CUT_SPAN_SECS / _CUT_WINDOW_SECS)
    span = np.full(windows_per_span, 1.0 / windows_per_span)
    chunks: list[np.ndarray] = []
    start = 0
    while len(samples) - start > _SINGLE_PASS_MAX_SECS * SAMPLE_RATE:
        search_from = start + int(_MIN_CHUNK_SECS * SAMPLE_RATE)
        region = samples[search_from : start + int(_MAX_CHUNK_SECS * SAMPLE_RATE)]
        windows = region[: len(region) // window * window].reshape(-1, window)
        # Averaged over a span, the minimum falls inside a pause, not at its edge: a chunk that
        # ends right where speech stops tends to lose its last words.
        energy = np.convolve(np.square(windows).mean(axis=1), span, mode="same")
        cut = search_from + int(np.argmin(energy)) * window + window // 2
        chunks.append(samples[start:cut])
        start = cut
    chunks.append(samples[start:])
    return chunks


class MoonshineEngine:
    """Moonshine base-en, loaded once per process and shared by every session."""

    def __init__(self, cache_dir: Path, threads: int = 2) -> None:
        """Load the converted graphs from `model_dir(cache_dir)`.

        Conversion belongs to setup (see `prepare_moonshine`); when setup was skipped it happens
        here, once, and delays the start by ~10 s.
        """
        started = time.perf_counter()
        paths = prepare_moonshine(cache_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Spinning threads burn the cores that the LLM and TTS need between decoder steps.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        self._encoder = ort.InferenceSession(str(paths.encoder), options, providers=providers)
        self._first = ort.InferenceSession(str(paths.decoder_first), options, providers=providers)
        self._with_past = ort.InferenceSession(str(paths.decoder_with_past), options, providers=providers)
        self._vocabulary = _load_vocabulary(paths.tokenizer)

        self._first_inputs = {value.name for value in self._first.get_inputs()}
        self._with_past_inputs = {value.name for value in self._with_past.get_inputs()}
        present = [o.name for o in self._first.get_outputs() if o.name.startswith("present.")]
        # The first step yields every layer's cache. The cross-attention (encoder) entries never
        # change afterwards, so later steps fetch only logits and the self-attention entries.
        self._first_outputs = ["logits", *present]
        self._step_outputs = ["logits", *(n for n in present if ".decoder." in n)]
        logger.info(f"Loaded {MODEL_NAME} in {time.perf_counter() - started:.2f} s")

    def warm_up(self) -> None:
        """Run every graph once, so the first real turn does not pay for lazy initialisation."""
        noise = np.random.default_rng(0).normal(0.0, 0.01, SAMPLE_RATE).astype(np.float32)
        hidden = self._encode(noise)
        self._greedy_decode(hidden, max_tokens=3, cancel=None, stop_at_eos=False)

    def transcribe(self, audio: np.ndarray, cancel: threading.Event | None = None) -> str:
        """Text spoken in `audio` (float32 mono 16 kHz in [-1, 1]); "" when nothing was heard.

        Blocking and CPU-bound: call it from a worker thread. Setting `cancel` makes it raise
        `TranscriptionCancelled` at the next decoder step (a few milliseconds). Audio longer than
        20 s is decoded in chunks cut at pauses, and their texts are joined.
        """
        samples = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        texts: list[str] = []
        for chunk in _split_long_audio(samples):
            if cancel is not None and cancel.is_set():
                raise TranscriptionCancelled
            seconds = len(chunk) / SAMPLE_RATE
            max_tokens = max(_MIN_TOKEN_CAP, math.ceil(seconds * _MAX_TOKENS_PER_SECOND))
            ids = self._greedy_decode(self._encode(chunk), max_tokens, cancel)
            texts.append(self._detokenize(ids))
        return " ".join(text for text in texts if text)

    def _encode(self, samples: np.ndarray) -> np.ndarray:
        return self._encoder.run(["last_hidden_state"], {"input_values": samples[None, :]})[0]

    def _greedy_decode(
        self,
        hidden: np.ndarray,
        max_tokens: int,
        cancel: threading.Event | None,
        stop_at_eos: bool = True,
    ) -> list[int]:
        """Greedy token ids for one chunk's encoder output, without BOS and EOS.

        `stop_at_eos=False` always runs `max_tokens` steps: warm-up uses it so that the with-past
        graph runs even though its input is not speech.
        """
        feeds: dict[str, np.ndarray] = {
            "input_ids": np.array([[_BOS_ID]], dtype=np.int64),
            "encoder_hidden_states": hidden,
        }
        outputs = self._first.run(self._first_outputs, {k: v for k, v in feeds.items() if k in self._first_inputs})
        cache = self._as_past(self._first_outputs, outputs)
        ids: list[int] = []
        while True:
            # The logits row is padded beyond the vocabulary; never pick a padding id.
            token = int(np.argmax(outputs[0][0, -1, : len(self._vocabulary)]))
            if token == _EOS_ID and stop_at_eos:
                return ids
            ids.append(token)
            if len(ids) >= max_tokens:
                return ids
            if cancel is not None and cancel.is_set():
                raise TranscriptionCancelled
            feeds = {
                "input_ids": np.array([[token]], dtype=np.int64),
                "encoder_hidden_states": hidden,
                **cache,
            }
            outputs = self._with_past.run(
                self._step_outputs, {k: v for k, v in feeds.items() if k in self._with_past_inputs}
            )
            cache.update(self._as_past(self._step_outputs, outputs))

    @staticmethod
    def _as_past(names: list[str], outputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Rename a step's `present.*` outputs to the `past_key_values.*` inputs of the next."""
        return {
            name.replace("present.", "past_key_values.", 1): value
            for name, value in zip(names, outputs, strict=True)
            if name.startswith("present.")
        }

    def _detokenize(self, ids: list[int]) -> str:
        data = b"".join(self._vocabulary[i] for i in ids if i >= _FIRST_TEXT_ID)
        # SentencePiece marks word starts with U+2581 ("▁").
        return data.decode("utf-8", errors="replace").replace("\u2581", " ").strip()
