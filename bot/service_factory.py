"""Settings -> the Pipecat STT, LLM and TTS services of one session (embedded or cloud)."""

import re

from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.utils.text.transforms.strip_markdown import strip_markdown

from bot.embedded import EmbeddedEngines
from bot.settings import Provider, Settings, ToolMode

# Emoji and pictographs: a TTS either spells them out or chokes on them.
_EMOJI = re.compile("[\U0001f000-\U0001faff\U00002600-\U000027bf\U0001f1e6-\U0001f1ff\u200d\ufe0f]++")


async def strip_emoji(text: str, _text_type) -> str:
    return _EMOJI.sub("", text)


# Whatever the LLM writes, the TTS receives speakable text.
SPEAKABLE_TEXT = [("*", strip_markdown), ("*", strip_emoji)]


BENCHMARK = "benchmark (fixed delays)"


def describe_providers(settings: Settings) -> dict[str, str]:
    """Stage -> 'provider:model', as turn records and prices name them."""
    stt, llm, tts = (settings.resolved(stage) for stage in ("stt", "llm", "tts"))
    # A self-hosted OpenAI-compatible server is not billed at OpenAI's prices.
    openai = "openai-compatible" if settings.openai_base_url else "openai"
    benchmark = {
        stage: f"{BENCHMARK}:{getattr(settings, f'benchmark_{stage}_delay_ms'):g}ms"
        for stage in ("stt", "llm", "tts")
        if settings.resolved(stage) is Provider.BENCHMARK
    }
    return {
        "stt": f"deepgram:{settings.deepgram_model}" if stt is Provider.DEEPGRAM else "embedded:moonshine-base-en",
        "llm": f"{openai}:{settings.openai_model}" if llm is Provider.OPENAI else f"embedded:{settings.llm_model}",
        "tts": (
            f"elevenlabs:{settings.elevenlabs_model}"
            if tts is Provider.ELEVENLABS
            else f"embedded:piper-{settings.tts_voice}"
        ),
    } | benchmark


def embedded_threads(settings: Settings) -> dict[str, int | None]:
    """Stage -> CPU threads of its embedded engine, None where a cloud service does the work."""
    threads = {"stt": settings.stt_threads, "llm": settings.llm_threads, "tts": settings.tts_threads}
    return {stage: count if settings.resolved(stage) is Provider.EMBEDDED else None for stage, count in threads.items()}


def create_stt(settings: Settings, engines: EmbeddedEngines) -> STTService:
    provider = settings.resolved("stt")
    if provider is Provider.BENCHMARK:
        from bot.services.benchmark import BenchmarkSTTService

        return BenchmarkSTTService(delay_secs=settings.benchmark_stt_delay_ms / 1000, faults=settings.benchmark_faults)
    if provider is Provider.DEEPGRAM:
        from pipecat.services.deepgram.stt import DeepgramSTTService

        return DeepgramSTTService(
            api_key=settings.deepgram_api_key.get_secret_value(),
            base_url=settings.deepgram_url,
            settings=DeepgramSTTService.Settings(model=settings.deepgram_model, interim_results=True),
        )
    from bot.services.moonshine_stt import MoonshineSTTService

    return MoonshineSTTService(
        engine=engines.stt,
        interim_interval_secs=settings.stt_interim_interval_secs,
        # Interims are a guess the embedded LLM prefills from only while it is idle; beside a
        # reply's first sentence they would only slow it down (they share the two cores).
        cpu_busy=(lambda: engines.llm.replies_pending) if engines.llm else None,
    )


def create_llm(settings: Settings, engines: EmbeddedEngines) -> LLMService:
    provider = settings.resolved("llm")
    if provider is Provider.BENCHMARK:
        from bot.services.benchmark import BenchmarkLLMService

        return BenchmarkLLMService(delay_secs=settings.benchmark_llm_delay_ms / 1000, faults=settings.benchmark_faults)
    if provider is Provider.OPENAI:
        from pipecat.services.openai.llm import OpenAILLMService

        from bot.services.routed_openai_llm import RoutedOpenAILLMService

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
    from bot.services.local_llm import LocalLLMService

    return LocalLLMService(
        engine=engines.llm,
        system_prompt=settings.system_prompt,
        temperature=settings.llm_temperature,
        max_answer_tokens=settings.llm_max_answer_tokens,
    )


def create_tts(settings: Settings, engines: EmbeddedEngines) -> TTSService:
    provider = settings.resolved("tts")
    if provider is Provider.BENCHMARK:
        from bot.services.benchmark import BenchmarkTTSService

        return BenchmarkTTSService(
            delay_secs=settings.benchmark_tts_delay_ms / 1000,
            faults=settings.benchmark_faults,
            text_transforms=SPEAKABLE_TEXT,
        )
    if provider is Provider.ELEVENLABS:
        from pipecat.services.elevenlabs.tts import ElevenLabsTTSService

        return ElevenLabsTTSService(
            api_key=settings.elevenlabs_api_key.get_secret_value(),
            url=settings.elevenlabs_url,
            settings=ElevenLabsTTSService.Settings(voice=settings.elevenlabs_voice_id, model=settings.elevenlabs_model),
            text_transforms=SPEAKABLE_TEXT,
        )
    from bot.services.piper_tts import SharedPiperTTSService

    return SharedPiperTTSService(voice=engines.tts, text_transforms=SPEAKABLE_TEXT)
