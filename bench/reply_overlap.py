"""How soon a reply's first sentence comes while another session's longer answer is still
being decoded, with the embedded LLM's continuations pausing for it and without.

Two sessions share the engine as in the server (its settings, system prompt and tools, warm
KV slots). Session A asks for an answer of several sentences; as soon as its first sentence
has been streamed, session B asks a short question. The trials alternate between
`LocalLLMService(continuation_pause_secs=...)` at its default and 0 (A's continuation then
decodes beside B's first sentence, in one llama.cpp batch). Prints, per setting, B's time
from its request to its first sentence and A's time to its whole answer.

    .venv/bin/python -m bench.reply_overlap --trials 6
"""

import argparse
import asyncio
import statistics
import sys
import time

from loguru import logger
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import LLMContextFrame, LLMFullResponseEndFrame, LLMTextFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.tests.utils import run_test

from bot.providers import llama
from bot.providers.llama.service import CONTINUATION_PAUSE_SECS, LocalLLMService
from bot.settings import Settings
from bot.tools import ALL_TOOLS

LONG_QUESTIONS = [
    "Describe the moon in four sentences.",
    "Tell me about the ocean in four sentences.",
    "Explain how bees make honey in four sentences.",
]
SHORT_QUESTIONS = [
    "What is the capital of Japan?",
    "Who wrote Romeo and Juliet?",
    "What color is the sky on a clear day?",
]


class ReplyClock(BaseObserver):
    """When a service streamed the end of its first sentence, and when its answer ended."""

    def __init__(self, service: LocalLLMService) -> None:
        super().__init__()
        self._service = service
        self.text = ""
        self.first_sentence_at: float | None = None
        self.answer_end_at: float | None = None

    async def on_push_frame(self, data: FramePushed) -> None:
        if data.source is not self._service:
            return
        if isinstance(data.frame, LLMTextFrame):
            self.text += data.frame.text
            if self.first_sentence_at is None and any(p in self.text for p in ".!?"):
                self.first_sentence_at = time.monotonic()
        elif isinstance(data.frame, LLMFullResponseEndFrame) and self.answer_end_at is None:
            self.answer_end_at = time.monotonic()
            self.first_sentence_at = self.first_sentence_at or self.answer_end_at


def _context(question: str) -> LLMContext:
    return LLMContext(messages=[{"role": "user", "content": question}], tools=ToolsSchema(ALL_TOOLS))


async def trial(engine, settings: Settings, pause_secs: float, long_q: str, short_q: str) -> dict:
    def service() -> LocalLLMService:
        return LocalLLMService(
            engine=engine,
            system_prompt=settings.system_prompt,
            temperature=settings.llm_temperature,
            max_answer_tokens=settings.llm_max_answer_tokens,
            continuation_pause_secs=pause_secs,
        )

    a, b = service(), service()
    a_clock, b_clock = ReplyClock(a), ReplyClock(b)
    a_started = time.monotonic()
    a_run = asyncio.create_task(run_test(a, frames_to_send=[LLMContextFrame(_context(long_q))], observers=[a_clock]))
    deadline = time.monotonic() + 30
    while a_clock.first_sentence_at is None and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    b_started = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(a_run, run_test(b, frames_to_send=[LLMContextFrame(_context(short_q))], observers=[b_clock])),
        timeout=60,
    )
    return {
        "b_first_sentence": b_clock.first_sentence_at - b_started,
        "a_answer": a_clock.answer_end_at - a_started,
        "a_words": len(a_clock.text.split()),
    }


async def bench(trials: int) -> None:
    settings = Settings()
    engine = await asyncio.to_thread(llama.load, settings)
    await llama.warm(engine, settings, ALL_TOOLS)
    settings_tried = {CONTINUATION_PAUSE_SECS: [], 0.0: []}
    for i in range(trials):
        for pause_secs in settings_tried if i % 2 == 0 else reversed(settings_tried):
            result = await trial(
                engine,
                settings,
                pause_secs,
                LONG_QUESTIONS[i % len(LONG_QUESTIONS)],
                SHORT_QUESTIONS[i % len(SHORT_QUESTIONS)],
            )
            settings_tried[pause_secs].append(result)
    print("continuation pause   B: request -> first sentence (mean / max)   A: whole answer (mean)   A words")
    for pause_secs, results in settings_tried.items():
        b = [r["b_first_sentence"] for r in results]
        a = [r["a_answer"] for r in results]
        words = statistics.fmean(r["a_words"] for r in results)
        print(
            f"{pause_secs:>17.1f} s   {statistics.fmean(b):>22.2f} / {max(b):.2f} s"
            f"   {statistics.fmean(a):>22.2f} s   {words:>7.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6, help="question pairs per setting")
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    asyncio.run(bench(parser.parse_args().trials))


if __name__ == "__main__":
    main()
