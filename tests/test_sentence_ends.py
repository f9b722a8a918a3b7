"""Sentence ends are Pipecat's (`match_endofsentence`) everywhere: the local LLM lets the next
reply start once its answer's first sentence is out (`FirstSentence`), and that is where the
TTS's text aggregation cuts the sentence it speaks first, "Dr." and "3.5" included."""

import asyncio
import re
import threading

import pytest
from pipecat.frames.frames import LLMContextFrame, LLMFullResponseEndFrame, LLMFullResponseStartFrame, LLMTextFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.tests.utils import run_test
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

from bot.providers.llama.engine import FirstSentenceTurns
from bot.providers.llama.service import FirstSentence, LocalLLMService
from bot.providers.piper.service import SharedPiperTTSService
from bot.providers.tool_routing import NO_TOOL

pytestmark = pytest.mark.unit

FIRST_SENTENCES = {
    "Dr. Smith is here. Next.": "Dr. Smith is here.",
    "It costs 3.5 dollars. OK.": "It costs 3.5 dollars.",
    "Hello! How are you?": "Hello!",
    # Checked at every character, `match_endofsentence` alone cuts "Albert I. Do" after "I.";
    # the TTS's aggregation checks only at the next word's first character and at its end.
    "Albert I. Douglas is here. Next.": "Albert I. Douglas is here.",
}


def tokens(text: str) -> list[str]:
    """`text` in pieces as an LLM streams it: words with their leading space, punctuation."""
    return re.findall(r"\s*\w+|\s*[^\w\s]", text)


def chunkings(text: str) -> dict[str, list[str]]:
    return {"whole": [text], "tokens": tokens(text), "characters": list(text)}


async def gate_outs(pieces: list[str]) -> tuple[list[bool], str | None]:
    """Whether the first sentence is out after each piece, and that sentence."""
    gate = FirstSentence()
    outs = [await gate.feed(piece) for piece in pieces]
    return outs, gate.sentence


async def tts_aggregation(pieces: list[str]) -> tuple[list[bool], str | None]:
    """The same, from the aggregator a Pipecat TTS cuts its text into sentences with."""
    aggregator, first, outs = SimpleTextAggregator(), None, []
    for piece in pieces:
        async for aggregation in aggregator.aggregate(piece):
            first = first or aggregation.text
        outs.append(first is not None)
    return outs, first


def test_tokens_keep_the_text():
    assert tokens("It costs 3.5 dollars. OK.") == ["It", " costs", " 3", ".", "5", " dollars", ".", " OK", "."]


@pytest.mark.parametrize("text", FIRST_SENTENCES)
@pytest.mark.parametrize("chunking", ["whole", "tokens", "characters"])
async def test_the_gate_cuts_where_the_tts_aggregation_does(text, chunking):
    pieces = chunkings(text)[chunking]
    outs, sentence = await gate_outs(pieces)
    assert sentence == FIRST_SENTENCES[text]
    assert (outs, sentence) == await tts_aggregation(pieces)  # at the same piece, too


@pytest.mark.parametrize(
    "text, out_from",
    [
        # Not at "Dr. " (the old `[.!?]\s` gate cut there), nor before text follows "here.".
        ("Dr. Smith is here. Next.", " Next"),
        # Not at "3.": the "5" that may follow makes it a number.
        ("It costs 3.5 dollars. OK.", " OK"),
        ("Hello! How are you?", " How"),
        ("Albert I. Douglas is here. Next.", " Next"),
    ],
)
async def test_a_streamed_sentence_is_out_once_text_after_its_end_is_streamed(text, out_from):
    pieces = tokens(text)
    outs, _ = await gate_outs(pieces)
    first_out = pieces.index(out_from)
    assert outs == [i >= first_out for i in range(len(pieces))], list(zip(pieces, outs, strict=True))


@pytest.mark.parametrize("pieces", [["Hello", "."], ["Hello", ".", " "], ["It", " costs", " 3", "."]])
async def test_nothing_is_out_while_the_text_after_the_punctuation_is_unknown(pieces):
    # At the answer's end the service lets the next reply start anyway (`answer_complete`).
    assert await gate_outs(pieces) == ([False] * len(pieces), None)


class RecordingVoice:
    """A silent stand-in for the Piper voice, recording what the TTS asks it to speak."""

    name = "recording"
    sample_rate = 16000

    def __init__(self):
        self.spoken: list[str] = []

    def synthesize(self, text: str) -> list[bytes]:
        self.spoken.append(text)
        return [bytes(640)]


@pytest.mark.parametrize("text", FIRST_SENTENCES)
async def test_the_tts_speaks_that_first_sentence_first(text):
    voice = RecordingVoice()
    frames = [LLMFullResponseStartFrame(), *(LLMTextFrame(t) for t in tokens(text)), LLMFullResponseEndFrame()]
    await asyncio.wait_for(run_test(SharedPiperTTSService(voice=voice), frames_to_send=frames), timeout=30)
    assert voice.spoken[0] == FIRST_SENTENCES[text], voice.spoken


class StreamingEngine:
    """The engine's interface, streaming a fixed answer token by token (no model): records how
    many of its pieces had been streamed when the reply let the next one start."""

    model_name = "scripted"
    context_tokens_per_slot = 2048
    replies_pending = False

    def __init__(self, answer: str):
        self.pieces = [*tokens(answer), '"', "}"]
        self.first_sentence_turns = FirstSentenceTurns()
        self.streamed = 0
        self.released_after: int | None = None
        release = self.first_sentence_turns.release

        def recorded_release():
            self.released_after = self.streamed
            release()

        self.first_sentence_turns.release = recorded_release

    async def stream_chat(self, request: dict, cancelled: threading.Event, session=None):
        routing = request.get("max_tokens") == 1  # the first token, choosing to answer
        pieces = [NO_TOOL] if routing else self.pieces
        for piece in pieces:
            self.streamed += not routing
            yield {"choices": [{"delta": {"content": piece}}]}
        yield {"choices": [], "timings": {"prompt_n": 1, "cache_n": 0, "predicted_n": len(pieces)}}

    def prefill(self, request: dict, session) -> None:
        pass


@pytest.mark.parametrize("text", FIRST_SENTENCES)
async def test_the_local_llm_lets_the_next_reply_start_where_the_tts_cuts(text):
    engine = StreamingEngine(text)
    service = LocalLLMService(engine=engine, system_prompt="Answer.", max_answer_tokens=40)
    context = LLMContext(messages=[{"role": "user", "content": "Hi"}])
    down, _ = await asyncio.wait_for(run_test(service, frames_to_send=[LLMContextFrame(context)]), timeout=30)
    assert "".join(f.text for f in down if isinstance(f, LLMTextFrame)) == text
    outs, _ = await tts_aggregation(tokens(text))
    assert engine.released_after == outs.index(True) + 1  # right after the piece the TTS cuts at
