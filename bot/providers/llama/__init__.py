"""The embedded LLM: a small GGUF model on llama.cpp, its weights assembled and verified from
pinned packages at setup, one engine per process with a slot per session, tools routed by a
grammar."""

from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameProcessor

from bot.providers.base import EmbeddedEngines, Room
from bot.settings import Provider, Settings


def describe(settings: Settings) -> str:
    return f"embedded:{settings.llm_model}"


def prepare(settings: Settings) -> None:
    from bot.providers.llama.weights import ensure_model_file

    ensure_model_file(settings.llm_model, settings.data_dir)


def load(settings: Settings):
    from bot.providers.llama.engine import LocalLLMEngine
    from bot.providers.llama.weights import ensure_model_file

    return LocalLLMEngine(
        ensure_model_file(settings.llm_model, settings.data_dir),
        threads=settings.llm_threads,
        context_tokens_per_slot=settings.llm_context_tokens,
        parallel_slots=settings.llm_parallel_sessions,
        serial_replies=settings.llm_serial_replies,
    )


async def warm(engine, settings: Settings, tools: list) -> None:
    """Cache the system prompt and the instructions of `tools`, the prefix of every request."""
    from bot.providers.llama.service import build_request

    context = LLMContext(messages=[{"role": "user", "content": "Hello!"}], tools=ToolsSchema(tools))
    await engine.warm_up(
        build_request(
            context,
            system_prompt=settings.system_prompt,
            max_tokens=settings.llm_max_answer_tokens,
            temperature=settings.llm_temperature,
            context_tokens=settings.llm_context_tokens,
        )
    )


def create(settings: Settings, engines: EmbeddedEngines) -> FrameProcessor:
    from bot.providers.llama.service import LocalLLMService

    return LocalLLMService(
        engine=engines.llm,
        system_prompt=settings.system_prompt,
        temperature=settings.llm_temperature,
        max_answer_tokens=settings.llm_max_answer_tokens,
    )


ROOM = Room(
    stage="llm",
    provider=Provider.EMBEDDED,
    describe=describe,
    create=create,
    model=lambda engine: engine.model_name,
    prepare=prepare,
    load=load,
    warm=warm,
    threads=lambda settings: settings.llm_threads,
)
