"""Pipecat's OpenAI LLM service with the embedded LLM's tool routing, for small models served
behind an OpenAI-compatible `base_url` (llama.cpp's server, vLLM, Ollama) that emit no native
`tool_calls` but honour a JSON-schema `response_format`.

Only how a reply is asked for and read changes: the client, retries, metrics and Pipecat's
function-call machinery are the parent's.
"""

import math

from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.openai.base_llm import OpenAILLMSettings
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.utils.types import assert_given

from bot.providers.tool_routing import ReplyDecoder, function_calls, reply_json_schema, route_conversation


class RoutedOpenAILLMService(OpenAILLMService):
    # What Pipecat's `_settings: Settings` is: mypy cannot resolve that class-body alias.
    _settings: OpenAILLMSettings

    async def _process_context(self, context: LLMContext):
        conversation = route_conversation(
            context, assert_given(self._settings.system_instruction), budget_chars=math.inf
        )
        params = {
            "model": self._settings.model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": self._settings.temperature,
            "max_tokens": self._settings.max_tokens,
            "messages": conversation.messages,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "reply",
                    "schema": reply_json_schema(conversation.tools, conversation.allow_tools),
                },
            },
        }
        decoder = ReplyDecoder()
        usage = None
        await self.start_ttfb_metrics()
        stream = await self._client.chat.completions.create(**params)
        try:
            async for chunk in stream:
                if chunk.usage:
                    usage = self._token_usage(chunk.usage)
                if not chunk.choices or not chunk.choices[0].delta:
                    continue
                await self.stop_ttfb_metrics()
                if text := decoder.feed(chunk.choices[0].delta.content or ""):
                    await self._push_llm_text(text)
        finally:
            await stream.close()
            if usage:
                await self.start_llm_usage_metrics(usage)

        if decoder.is_tool_call:
            await self.run_function_calls(function_calls(context, decoder.tool_calls()))
