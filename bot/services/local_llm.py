"""Pipecat LLM service for the embedded llama.cpp engine, with grammar-routed tool calls.

Each reply is decoded under the routing grammar (see `tool_routing`): an answer is streamed
to the TTS as its JSON string is generated; a tool call goes to Pipecat's own function-call
machinery (`run_function_calls`), so the tools registered for OpenAI serve this model too.
"""

import threading
import time
import uuid

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    FunctionCallFromLLM,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
)
from pipecat.metrics.metrics import LLMTokenUsage
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings

from bot.engines.local_llm import LocalLLMEngine
from bot.services.tool_routing import (
    REPLY_PREFILL,
    ReplyDecoder,
    reply_grammar,
    route_conversation,
)

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
    budget = (context_tokens - max_tokens) * CHARS_PER_TOKEN
    conversation = route_conversation(context, system_prompt, budget)
    return {
        "messages": [*conversation.messages, {"role": "assistant", "content": REPLY_PREFILL}],
        "grammar": reply_grammar(conversation.tools, allow_tools=conversation.allow_tools),
        "max_tokens": max_tokens,
        "temperature": temperature,
        "cache_prompt": True,
    }


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
        self._cancel_current = threading.Event()
        self._response_open = False
        # Keeps this session on its own KV slot (a key, so the engine holds no reference).
        self._session_key = uuid.uuid4().hex

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

    def prefill_user_turn(self, context: LLMContext, words: str) -> None:
        """Start computing the prompt of the turn the user is still speaking, from the words
        heard so far, so that answering it later computes only what changed (the engine's
        `prefill`). Not while this session's reply is being generated."""
        if self._response_open or not words.strip():
            return
        spoken_so_far = LLMContext(
            messages=[*context.get_messages(), {"role": "user", "content": words}],
            tools=context.tools,
        )
        self._engine.prefill(self._request(spoken_so_far), self._session_key)

    def _request(self, context: LLMContext) -> dict:
        return build_request(
            context,
            system_prompt=self._settings.system_instruction,
            max_tokens=self._settings.max_tokens,
            temperature=self._settings.temperature,
            context_tokens=self._engine.context_tokens_per_slot,
        )

    async def _generate(self, context: LLMContext):
        request = self._request(context)
        decoder = ReplyDecoder(prefill=REPLY_PREFILL)
        usage = None
        # A new event per request: setting it stops exactly this generation, including
        # when this task is cancelled by an interruption.
        self._cancel_current = cancelled = threading.Event()
        await self.start_ttfb_metrics()
        started = time.monotonic()
        async for chunk in self._engine.stream_chat(request, cancelled, session=self._session_key):
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if not piece:
                    continue
                text = decoder.feed(piece)
                if text:
                    await self.stop_ttfb_metrics()
                    await self._push_llm_text(text)
                if decoder.answer_complete:
                    # The answer's closing quote: end the response now, so the TTS speaks its
                    # last sentence without waiting for the JSON's closing brace and EOS, which
                    # are still drained for the usage figures that come with them.
                    await self._end_response()
            if timings := chunk.get("timings"):
                logger.debug(
                    f"{self}: prompt {timings.get('prompt_n')} new + {timings.get('cache_n')} cached"
                    f" tokens in {timings.get('prompt_ms', 0):.0f} ms, {timings.get('predicted_n')}"
                    f" generated in {timings.get('predicted_ms', 0):.0f} ms"
                )
                usage = LLMTokenUsage(
                    prompt_tokens=timings.get("prompt_n", 0) + timings.get("cache_n", 0),
                    completion_tokens=timings.get("predicted_n", 0),
                    total_tokens=timings.get("prompt_n", 0)
                    + timings.get("cache_n", 0)
                    + timings.get("predicted_n", 0),
                    cache_read_input_tokens=timings.get("cache_n", 0),
                )
        await self.stop_ttfb_metrics()
        if usage is not None:
            await self.start_llm_usage_metrics(usage)

        if decoder.is_tool_call:
            calls = decoder.tool_calls()
            logger.debug(f"{self}: tool calls {calls} after {time.monotonic() - started:.2f}s")
            await self.run_function_calls(
                [
                    FunctionCallFromLLM(
                        context=context,
                        tool_call_id=f"call_{uuid.uuid4().hex[:12]}",
                        function_name=name,
                        arguments=arguments,
                    )
                    for name, arguments in calls
                ]
            )

    async def _handle_interruptions(self, frame):
        self._cancel_current.set()
        await super()._handle_interruptions(frame)

    async def cleanup(self):
        self._cancel_current.set()
        await super().cleanup()
