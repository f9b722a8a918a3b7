"""The embedded stack: the engines a configuration needs, loaded once per process and warmed
with the request every reply starts with (the system prompt and the tools)."""

import asyncio
import time
from dataclasses import dataclass, field

from loguru import logger
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.processors.aggregators.llm_context import LLMContext

from bot.settings import Provider, Settings


@dataclass
class EmbeddedEngines:
    stt: "MoonshineEngine | None" = None  # noqa: F821
    llm: "LocalLLMEngine | None" = None  # noqa: F821
    tts: "SharedPiperVoice | None" = None  # noqa: F821
    load_seconds: dict[str, float] = field(default_factory=dict)
    # The apology a failed turn plays (16-bit mono PCM at `apology_sample_rate`), rendered
    # here so that it plays even when the TTS is what failed.
    apology: bytes = b""
    apology_sample_rate: int = 0

    def describe(self) -> dict[str, str | None]:
        """The embedded model each stage loaded; None where a cloud or benchmark service
        serves the stage and no model is loaded."""
        return {
            "stt": "moonshine-base-en" if self.stt else None,
            "llm": self.llm.model_name if self.llm else None,
            "tts": self.tts.name if self.tts else None,
        }


def prepare_models(settings: Settings) -> None:
    """One-time setup: assemble and verify the LLM weights, convert the STT model."""
    from bot.engines.llm_weights import ensure_model_file
    from bot.engines.moonshine import prepare_moonshine

    ensure_model_file(settings.llm_model, settings.data_dir)
    prepare_moonshine(settings.data_dir)


def _load_stt(settings: Settings):
    from bot.engines.moonshine import MoonshineEngine

    engine = MoonshineEngine(settings.data_dir, threads=settings.stt_threads)
    engine.warm_up()
    return engine


def load_llm(settings: Settings):
    from bot.engines.llm_weights import ensure_model_file
    from bot.engines.local_llm import LocalLLMEngine

    return LocalLLMEngine(
        ensure_model_file(settings.llm_model, settings.data_dir),
        threads=settings.llm_threads,
        context_tokens_per_slot=settings.llm_context_tokens,
        parallel_slots=settings.llm_parallel_sessions,
        serial_replies=settings.llm_serial_replies,
    )


def _load_tts(settings: Settings):
    from bot.engines.piper_voice import SharedPiperVoice

    voice = SharedPiperVoice(settings.tts_voice, threads=settings.tts_threads)
    voice.warm_up()
    return voice


def render_apology(settings: Settings, voice, sample_rate: int) -> bytes:
    """The apology spoken by the embedded Piper voice (a cloud TTS may be the stage that
    failed), resampled to the pipeline's output rate; b"" when there is nothing to say."""
    import numpy as np
    import soxr

    from bot.engines.piper_voice import SharedPiperVoice

    if not settings.apology.strip():
        return b""
    # Loaded just for this when the TTS is a cloud one, and dropped once rendered.
    voice = voice or SharedPiperVoice(settings.tts_voice, threads=1)
    pcm = np.frombuffer(b"".join(voice.synthesize(settings.apology)), dtype=np.int16)
    if voice.sample_rate != sample_rate:
        pcm = soxr.resample(pcm, voice.sample_rate, sample_rate).astype(np.int16)
    return pcm.tobytes()


async def warm_llm(engine, settings: Settings) -> None:
    """Cache the system prompt and tool instructions, the prefix of every request."""
    from bot.services.local_llm import build_request
    from bot.tools import ALL_TOOLS

    context = LLMContext(messages=[{"role": "user", "content": "Hello!"}], tools=ToolsSchema(ALL_TOOLS))
    await engine.warm_up(
        build_request(
            context,
            system_prompt=settings.system_prompt,
            max_tokens=settings.llm_max_answer_tokens,
            temperature=settings.llm_temperature,
            context_tokens=settings.llm_context_tokens,
        )
    )


async def load_engines(settings: Settings) -> EmbeddedEngines:
    """Load (in worker threads, side by side) every engine an embedded stage uses."""
    loaders = {"stt": _load_stt, "llm": load_llm, "tts": _load_tts}
    wanted = [s for s in loaders if settings.resolved(s) is Provider.EMBEDDED]
    engines = EmbeddedEngines()

    async def load(stage: str):
        started = time.monotonic()
        setattr(engines, stage, await asyncio.to_thread(loaders[stage], settings))
        if stage == "llm":
            await warm_llm(engines.llm, settings)
        engines.load_seconds[stage] = round(time.monotonic() - started, 2)

    async def apology():
        from bot.audio_rates import AUDIO_OUT_RATE

        started = time.monotonic()
        engines.apology_sample_rate = AUDIO_OUT_RATE
        engines.apology = await asyncio.to_thread(render_apology, settings, engines.tts, AUDIO_OUT_RATE)
        logger.info(f"Apology rendered in {time.monotonic() - started:.2f}s")

    # With an embedded TTS the apology waits for its voice (reused, not loaded twice);
    # otherwise it loads a voice of its own, beside the other engines.
    reuse_voice = "tts" in wanted
    await asyncio.gather(*(load(stage) for stage in wanted), *([] if reuse_voice else [apology()]))
    if reuse_voice:
        await apology()
    logger.info(f"Embedded engines ready: {engines.describe()} in {engines.load_seconds}")
    return engines
