"""Pipecat LLM service for the embedded llama.cpp engine, with grammar-routed tool calls.

Each reply is decoded under the routing grammar (see `tool_routing`): an answer is streamed
to the TTS as its JSON string is generated; a tool call goes to Pipecat's own function-call
machinery (`run_function_calls`), so the tools registered for OpenAI serve this model too.
"""

import asyncio
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
)
from pipecat.metrics.metrics import LLMTokenUsage
from pipecat.processors.aggregators.llm_context import LLMContext, LLMContextMessage
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator
from pipecat.utils.types import assert_given

from bot.conversation import Messages, before_request, merged_request
from bot.providers.llama.engine import LocalLLMEngine
from bot.providers.tool_routing import (
    ANSWER_PREFILL,
    NO_TOOL,
    REPLY_PREFILL,
    HistoryWindow,
    ReplyDecoder,
    answer_grammar,
    call_grammar,
    call_json,
    call_opening,
    function_calls,
    reply_grammar,
    route_conversation,
)
from bot.routing_hints import RoutableTool


@dataclass
class _ComputedTokens:
    """What the requests of one reply computed, from llama.cpp's timings."""

    requests: int = 0
    prompt_computed: int = 0  # prompt tokens evaluated, over every request
    prompt_total: int = 0  # the last request's whole prompt
    generated: int = 0

    def add(self, timings: dict) -> None:
        self.requests += 1
        self.prompt_computed += timings.get("prompt_n", 0)
        self.prompt_total = timings.get("prompt_n", 0) + timings.get("cache_n", 0)
        self.generated += timings.get("predicted_n", 0)

    def usage(self) -> LLMTokenUsage:
        return LLMTokenUsage(
            prompt_tokens=self.prompt_total,
            completion_tokens=self.generated,
            total_tokens=self.prompt_total + self.generated,
            # The part of the prompt this reply did not compute: it was in the KV cache.
            cache_read_input_tokens=max(0, self.prompt_total - self.prompt_computed),
        )


class FirstSentence:
    """Tells when an answer's first sentence has been streamed whole, so the TTS can speak it:
    where Pipecat's TTS text aggregation (a `SimpleTextAggregator`, fed the same text) cuts it.
    Its sentence ends are `match_endofsentence`'s ("Dr." or "3.5" end none), decided once text
    after the punctuation shows how it reads: "It costs 3." is not cut before the "5" can come.
    """

    def __init__(self) -> None:
        self._aggregator = SimpleTextAggregator()
        self.sentence: str | None = None  # once cut

    async def feed(self, text: str) -> bool:
        """Add streamed answer text; whether the first sentence is out (now or before)."""
        if self.sentence is None:
            async for aggregation in self._aggregator.aggregate(text):
                if self.sentence is None:
                    self.sentence = aggregation.text
        return self.sentence is not None


# The longest an answer whose first sentence is out pauses for later turns' first sentences:
# less than its first sentence takes to speak, so its next one is ready when that ends (the
# capacity benchmark's playback stalls stayed at 0).
CONTINUATION_PAUSE_SECS = 0.8


def _ends_between_characters(raw_json: str) -> bool:
    """Whether JSON string text ends outside an escape sequence (a request can go on from it
    under the answer grammar)."""
    trailing = len(raw_json) - len(raw_json.rstrip("\\"))
    return trailing % 2 == 0 and not re.search(r"\\u[0-9a-fA-F]{0,3}+$", raw_json[-6:])


# Characters per token, a conservative estimate for English: used to trim old turns before a
# conversation overflows the model's window.
CHARS_PER_TOKEN = 3.0


def build_request(
    context: LLMContext,
    *,
    system_prompt: str | None,
    max_tokens: int,
    temperature: float,
    context_tokens: int,
) -> dict:
    """The engine request for a context: routed messages, grammar and limits."""
    request, _ = routed_request(
        context,
        system_prompt=system_prompt,
        max_tokens=max_tokens,
        temperature=temperature,
        context_tokens=context_tokens,
    )
    return request


def routed_request(
    context: LLMContext,
    *,
    system_prompt: str | None,
    max_tokens: int,
    temperature: float,
    context_tokens: int,
    window: HistoryWindow | None = None,
) -> tuple[dict, list[RoutableTool]]:
    """`build_request`, and the tools its reply may call (`window`: the session's)."""
    budget = (context_tokens - max_tokens) * CHARS_PER_TOKEN
    conversation = route_conversation(context, system_prompt, budget, window)
    callable_tools = conversation.tools if conversation.allow_tools else []
    request = {
        "messages": [*conversation.messages, {"role": "assistant", "content": REPLY_PREFILL}],
        "grammar": reply_grammar(conversation.tools, allow_tools=conversation.allow_tools),
        "max_tokens": max_tokens,
        "temperature": temperature,
        "cache_prompt": True,
    }
    return request, callable_tools


def with_reply_started(request: dict, started: str, grammar: str) -> dict:
    """`request` continued from the reply's first characters `started` (written into the
    assistant's turn, so they are computed as prompt in one batch) under `grammar`."""
    return {
        **request,
        "messages": [*request["messages"][:-1], {"role": "assistant", "content": started}],
        "grammar": grammar,
    }


# A tool name is told apart within this many tokens (names sharing a prefix, "get_...").
MAX_NAME_TOKENS = 4


def llm_settings(
    model: str,
    *,
    system_instruction: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> LLMSettings:
    """Settings of an LLM service that runs here: every sampling knob it does not use is
    declared unset (Pipecat's base class requires each one)."""
    return LLMSettings(
        model=model,
        system_instruction=system_instruction,
        temperature=temperature,
        max_tokens=max_tokens,
        top_p=None,
        top_k=None,
        frequency_penalty=None,
        presence_penalty=None,
        seed=None,
        filter_incomplete_user_turns=False,
        user_turn_completion_config=None,
        use_provider_thinking_default=False,
    )


class LocalLLMService(LLMService):
    def __init__(
        self,
        *,
        engine: LocalLLMEngine,
        system_prompt: str,
        temperature: float = 0.0,
        max_answer_tokens: int = 80,
        continuation_pause_secs: float = CONTINUATION_PAUSE_SECS,
        **kwargs,
    ):
        settings = llm_settings(
            engine.model_name,
            system_instruction=system_prompt,
            temperature=temperature,
            max_tokens=max_answer_tokens,
        )
        super().__init__(settings=settings, **kwargs)
        self._engine = engine
        self._continuation_pause_secs = continuation_pause_secs
        self._cancel_current = threading.Event()
        self._interrupted = False
        self._response_open = False
        self._holds_first_sentence_turn = False
        # Keeps this session on its own KV slot (a key, so the engine holds no reference).
        self._session_key = uuid.uuid4().hex
        # Where this session's requests start its conversation, so its cache stays valid.
        self._history = HistoryWindow()

    def can_generate_metrics(self) -> bool:
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            self._response_open = True
            await self.push_frame(LLMFullResponseStartFrame())
            await self.start_processing_metrics()
            try:
                await self._generate(frame.context)
            except Exception as e:
                await self.push_error(error_msg=f"Local LLM error: {e}", exception=e)
            finally:
                await self._end_response()
        else:
            await self.push_frame(frame, direction)

    async def _end_response(self):
        if self._response_open:
            self._response_open = False
            await self.stop_processing_metrics()
            await self.push_frame(LLMFullResponseEndFrame())

    def prefill_user_turn(
        self, context: LLMContext, words: str, *, whole_request: bool = False, answer_spoken: str | None = None
    ) -> None:
        """Start computing the prompt of the turn the user is still speaking, from the words
        heard so far, so that answering it later computes only what changed (the engine's
        `prefill`). With no words yet, the conversation up to the last answer, or, with
        `answer_spoken`, up to the answer now being spoken, which the context will hold once
        it has been heard (a tool's call, result and spoken sentence are 110-160 tokens no
        request has computed). Not while this session's reply is being generated."""
        # conversation.py reads the messages as the dicts they are (it skips LLMSpecificMessage).
        messages = cast(Messages, context.get_messages())
        if self._response_open:
            return
        if answer_spoken:
            messages = [*messages, {"role": "assistant", "content": answer_spoken}]
        if words.strip():
            # As the request will reach the LLM: one message with the parts said before it
            # (`whole_request`: the words are every part's).
            if whole_request:
                messages = before_request(messages)
            messages = [*messages, {"role": "user", "content": words}]
            messages = merged_request(messages) or messages
        elif not messages or messages[-1].get("role") == "user":
            return  # nothing was said since the last request computed it
        request, _ = self._request(LLMContext(messages=cast(list[LLMContextMessage], messages), tools=context.tools))
        if not words.strip():
            # Up to the end of the last answer, which a later request's prompt starts with.
            request = {**request, "messages": request["messages"][:-1]}
        self._engine.prefill(request, self._session_key)

    def _request(self, context: LLMContext) -> tuple[dict, list[RoutableTool]]:
        return routed_request(
            context,
            system_prompt=assert_given(self._settings.system_instruction),
            # Both set by __init__ (llm_settings), never unset.
            max_tokens=cast(int, self._settings.max_tokens),
            temperature=cast(float, self._settings.temperature),
            context_tokens=self._engine.context_tokens_per_slot,
            window=self._history,
        )

    async def _generate(self, context: LLMContext):
        request, tools = self._request(context)
        computed = _ComputedTokens()
        await self.start_ttfb_metrics()
        started = time.monotonic()
        try:
            await self._wait_for_first_sentences_ahead()
            await self._compute_reply(context, request, tools, computed, started)
        finally:
            self._let_next_reply_start()

    async def _wait_for_first_sentences_ahead(self) -> None:
        """Replies compute their first sentence one after another, in the order their turns
        ended (`FirstSentenceTurns`). A reply whose first sentence is out lets the next one
        start, and pauses while later replies compute theirs (`_decode_reply`)."""
        if (turns := self._engine.first_sentence_turns) is not None:
            await turns.acquire()
            self._holds_first_sentence_turn = True

    def _let_next_reply_start(self) -> None:
        if self._holds_first_sentence_turn and (turns := self._engine.first_sentence_turns) is not None:
            self._holds_first_sentence_turn = False
            turns.release()

    async def _compute_reply(
        self,
        context: LLMContext,
        request: dict,
        tools: list[RoutableTool],
        computed: "_ComputedTokens",
        started: float,
    ):
        # A new event per request: setting it stops exactly that generation (an interruption
        # sets the current one and cancels this task).
        self._cancel_current = choice_made = threading.Event()
        self._interrupted = False
        first_token, _ = await self._decode({**request, "max_tokens": 1}, choice_made, computed)
        if self._interrupted:  # Pipecat normally cancels this task first; never go on
            return
        decoder = ReplyDecoder(prefill=REPLY_PREFILL)
        if first_token.startswith(NO_TOOL):
            # The model chose to answer: the grammar allows only `ANSWER_PREFILL` up to the
            # answer's first word, so the reply continues from there. Computed as prompt, in
            # one batch, those 6 tokens take 0.06 s instead of 0.12 s decoded one at a time,
            # and 0.4 s instead of 0.6 s beside three other sessions.
            request = with_reply_started(request, ANSWER_PREFILL, answer_grammar())
            decoder = ReplyDecoder(prefill=ANSWER_PREFILL)
        elif (opening := await self._tool_chosen(request, tools, first_token, computed)) is not None:
            (chosen,) = [t for t in tools if call_opening(t) == opening]
            logger.debug(f"{self}: calling {chosen.name} after {time.monotonic() - started:.2f}s")
            if (arguments := chosen.determined_arguments()) is not None:
                # The request leaves each argument only one value: the call is complete as
                # it is named, with nothing to decode (8-10 tokens, 0.25-0.4 s).
                decoder = ReplyDecoder()
                decoder.feed(call_json(chosen.name, arguments))
            else:
                # Once its name is told apart the grammar allows only that call's opening up
                # to the arguments: computed as prompt, like the answer's.
                reply_start = REPLY_PREFILL + opening
                request = with_reply_started(request, reply_start, call_grammar(tools, opening))
                decoder = ReplyDecoder(prefill=reply_start)
        if self._interrupted:
            return
        if not decoder.is_tool_call:
            # The rest of the reply (an answer, or a tool call's arguments) is decoded.
            await self._decode_reply(request, computed, decoder)
        await self.stop_ttfb_metrics()
        if computed.requests:
            await self.start_llm_usage_metrics(computed.usage())

        self._let_next_reply_start()  # not held while the tools run
        if decoder.is_tool_call:
            calls = decoder.tool_calls()
            logger.debug(f"{self}: tool calls {calls} after {time.monotonic() - started:.2f}s")
            await self.run_function_calls(function_calls(context, calls))

    async def _tool_chosen(
        self, request: dict, tools: list[RoutableTool], started: str, computed: "_ComputedTokens"
    ) -> str | None:
        """The opening of the one call that a reply beginning with `started` can be (decoding
        a token more while names share a prefix); None when it cannot be told apart."""
        for _ in range(MAX_NAME_TOKENS):
            openings = [call_opening(t) for t in tools if call_opening(t).startswith(started)]
            if len(openings) == 1:
                return openings[0]
            if not openings:
                return None
            self._cancel_current = next_token = threading.Event()
            more = with_reply_started(request, REPLY_PREFILL + started, call_grammar(tools, started))
            piece, _ = await self._decode({**more, "max_tokens": 1}, next_token, computed)
            if self._interrupted or not piece:
                return None
            started += piece
        return None

    async def _decode_reply(self, request: dict, computed: "_ComputedTokens", decoder: ReplyDecoder) -> None:
        """Decode the rest of the reply (an answer, or a tool call held whole in its turn).
        Once its first sentence is out, an answer stops for as long as a later turn's reply
        computes its first sentence (up to `continuation_pause_secs` in all), then goes on
        from the text it had reached, with what is left of its token budget.

        llama.cpp decodes the running requests in one batch, and on this CPU a step of two
        costs what both cost one after the other (52 ms against 20), so a continuation
        decoded beside a first sentence made the waiting user wait longer for no gain: the
        paused reply still has its first sentence's audio to play (seconds)."""
        pause_left = self._continuation_pause_secs
        *conversation, reply = request["messages"]  # the reply's start, prefilled as assistant
        generated, tokens_before, reply_budget = "", computed.generated, request["max_tokens"]
        while True:
            self._cancel_current = cancelled = threading.Event()

            def should_pause(raw: str) -> bool:
                return (
                    pause_left > 0  # noqa: B023 -- called within this iteration only
                    and not self._holds_first_sentence_turn
                    and self._engine.replies_pending
                    and not decoder.answer_complete
                    and _ends_between_characters(raw)
                )

            raw, paused = await self._decode(request, cancelled, computed, decoder, should_pause)
            generated += raw
            if not paused or self._interrupted:
                return
            began = time.monotonic()
            try:
                if (turns := self._engine.first_sentence_turns) is not None:
                    await asyncio.wait_for(turns.wait_until_none_pending(), pause_left)
            except TimeoutError:
                pass
            pause_left -= time.monotonic() - began
            tokens_left = reply_budget - (computed.generated - tokens_before)
            request = {
                **request,
                "messages": [*conversation, {**reply, "content": reply["content"] + generated}],
                "max_tokens": max(1, tokens_left),
            }

    async def _decode(
        self,
        request: dict,
        cancelled: threading.Event,
        computed: "_ComputedTokens",
        decoder: ReplyDecoder | None = None,
        should_pause: Callable[[str], bool] | None = None,
    ) -> tuple[str, bool]:
        """Stream one request; speak its answer text as `decoder` finds it. Returns the raw
        text generated, and whether it stopped because `should_pause` (asked after each
        piece, with the raw text so far) said so."""
        generated, first_sentence, timed, paused = [], FirstSentence(), False, False
        async for chunk in self._engine.stream_chat(request, cancelled, session=self._session_key):
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if not piece:
                    continue
                generated.append(piece)
                if decoder is None:
                    continue
                text = decoder.feed(piece)
                if text:
                    await self.stop_ttfb_metrics()
                    await self._push_llm_text(text)
                    if self._holds_first_sentence_turn and await first_sentence.feed(text):
                        self._let_next_reply_start()
                if not paused and should_pause is not None and should_pause("".join(generated)):
                    # Stops within a token; what llama.cpp sends until then is kept.
                    cancelled.set()
                    paused = True
                if decoder.answer_complete:
                    self._let_next_reply_start()
                    # The answer's closing quote: end the response now, so the TTS speaks its
                    # last sentence without waiting for the JSON's closing brace and EOS, which
                    # are still drained for the usage figures that come with them.
                    await self._end_response()
            if timings := chunk.get("timings"):
                timed = True
                computed.add(timings)
                logger.debug(
                    f"{self}: prompt {timings.get('prompt_n')} new + {timings.get('cache_n')} cached"
                    f" tokens in {timings.get('prompt_ms', 0):.0f} ms, {timings.get('predicted_n')}"
                    f" generated in {timings.get('predicted_ms', 0):.0f} ms"
                )
        if not timed and generated:  # a stopped request ends without its timings
            computed.add({"predicted_n": len(generated)})
        return "".join(generated), paused and not (decoder and decoder.answer_complete)

    async def _handle_interruptions(self, frame):
        self._cancel_current.set()
        self._interrupted = True
        await super()._handle_interruptions(frame)

    async def cleanup(self):
        self._cancel_current.set()
        await super().cleanup()
