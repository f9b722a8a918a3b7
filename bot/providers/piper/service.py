"""Pipecat TTS service over the process-wide Piper voice (Pipecat's PiperTTSService loads a
voice per instance, i.e. per session: seconds and ~250 MB each)."""

import asyncio
from collections.abc import AsyncGenerator

from pipecat.frames.frames import ErrorFrame, Frame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.utils.string import match_endofsentence

from bot.providers.piper.voice import SharedPiperVoice

# A first sentence this long starts from its first clause: Piper renders a whole text before
# any of it plays, and the clause's audio covers the time the rest takes to render.
CLAUSE_SPLIT_MIN_WORDS = 9
CLAUSE_MIN_WORDS = 3
_CLAUSE_ENDS = (", ", ": ", "; ", " - ")


def first_clause(sentence: str) -> tuple[str, str] | None:
    """(first clause, the rest) of a long sentence, split after its first comma, colon,
    semicolon or dash with at least `CLAUSE_MIN_WORDS` words on each side; None otherwise."""
    if len(sentence.split()) < CLAUSE_SPLIT_MIN_WORDS:
        return None
    ends = [i for mark in _CLAUSE_ENDS if (i := sentence.find(mark)) > 0]
    for end in sorted(ends):
        head, rest = sentence[: end + 1].strip(), sentence[end + 1 :].strip()
        if len(head.split()) >= CLAUSE_MIN_WORDS and len(rest.split()) >= CLAUSE_MIN_WORDS:
            return head, rest
    return None


def speaking_pieces(text: str) -> list[str]:
    """`text` as the pieces rendered one after another: its sentences (Pipecat's own sentence
    ends), the first of them from its first clause."""
    sentences, rest = [], text.strip()
    while rest and (end := match_endofsentence(rest)):
        sentences.append(rest[:end].strip())
        rest = rest[end:].strip()
    if rest:
        sentences.append(rest)
    if sentences and (clause := first_clause(sentences[0])):
        sentences[:1] = list(clause)
    return [s for s in sentences if s]


class SharedPiperTTSService(TTSService):
    def __init__(self, *, voice: SharedPiperVoice, **kwargs):
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model="piper", voice=voice.name, language="en"),
            **kwargs,
        )
        self._voice = voice
        self._started_contexts: set[str] = set()  # answers whose first sentence was rendered

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        # Only an answer's first sentence is split: later ones render while earlier ones play.
        pieces = speaking_pieces(text) if context_id not in self._started_contexts else [text]
        self._started_contexts = {context_id}

        async def rendered():
            for piece in pieces:  # the next piece renders while the one before plays
                for chunk in await asyncio.to_thread(self._voice.synthesize, piece):
                    yield chunk

        try:
            await self.start_tts_usage_metrics(text)
            async for frame in self._stream_audio_frames_from_iterator(
                rendered(), in_sample_rate=self._voice.sample_rate, context_id=context_id
            ):
                await self.stop_ttfb_metrics()
                yield frame
        except Exception as e:
            yield ErrorFrame(error=f"Piper TTS failed: {e}")
        finally:
            await self.stop_ttfb_metrics()
