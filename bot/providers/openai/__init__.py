"""OpenAI's Chat Completions, or any OpenAI-compatible server (`AGENT_OPENAI_BASE_URL`): Pipecat's
own service with native tool calls, or the routed one for small models (`AGENT_LLM_TOOL_MODE`)."""

from pipecat.processors.frame_processor import FrameProcessor

from bot.costs import PriceTable, llm_cost
from bot.providers.base import EmbeddedEngines, Room
from bot.records import Usage
from bot.settings import Provider, Settings, ToolMode


def describe(settings: Settings) -> str:
    # A self-hosted OpenAI-compatible server is not billed at OpenAI's prices.
    name = "openai-compatible" if settings.openai_base_url else "openai"
    return f"{name}:{settings.openai_model}"


def price(usage: Usage, model: str, prices: PriceTable) -> float:
    return llm_cost(usage.llm_prompt_tokens, usage.llm_cached_tokens, usage.llm_completion_tokens, prices.llm(model))


def create(settings: Settings, _engines: EmbeddedEngines) -> FrameProcessor:
    from pipecat.services.openai.llm import OpenAILLMService

    from bot.providers.openai.routed import RoutedOpenAILLMService

    service_class = RoutedOpenAILLMService if settings.llm_tool_mode is ToolMode.ROUTED else OpenAILLMService
    return service_class(
        # A local OpenAI-compatible server may need no key, but the client wants one.
        api_key=(settings.openai_api_key.get_secret_value() if settings.openai_api_key else "none"),
        base_url=settings.openai_base_url,
        settings=OpenAILLMService.Settings(
            model=settings.openai_model,
            system_instruction=settings.system_prompt,
            temperature=settings.llm_temperature,
        ),
    )


ROOM = Room(stage="llm", provider=Provider.OPENAI, describe=describe, create=create, price=price)
