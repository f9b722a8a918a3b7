"""The providers: one room per provider (`bot/providers/<name>/`), and the registry that turns
settings into each stage's Pipecat service and loads, once per process, the engines of the
embedded ones. A new provider is a room and one line in `ROOMS`."""

import asyncio
import time
from collections.abc import Callable

from loguru import logger
from pipecat.processors.frame_processor import FrameProcessor

from bot.audio_rates import AUDIO_OUT_RATE
from bot.costs import COMPONENTS, PriceTable
from bot.providers import benchmark, daily, deepgram, elevenlabs, llama, moonshine, openai, piper
from bot.providers.base import STAGES, EmbeddedEngines, Room, Stage
from bot.providers.speakable import SPEAKABLE_TEXT
from bot.records import Cost, Usage
from bot.settings import Provider, Settings
from bot.tools import ALL_TOOLS

__all__ = ["SPEAKABLE_TEXT", "EmbeddedEngines", "Room", "ROOMS"]

ROOMS: dict[tuple[Stage, Provider], Room] = {
    (room.stage, room.provider): room
    for room in (
        moonshine.ROOM,
        llama.ROOM,
        piper.ROOM,
        deepgram.ROOM,
        openai.ROOM,
        elevenlabs.ROOM,
        *benchmark.ROOMS,
    )
}

# Transports that charge by the minute: transport name -> USD for a turn's duration.
TRANSPORT_FEES: dict[str, Callable[[float, PriceTable], float]] = {"daily": daily.transport_fee}


def room(settings: Settings, stage: Stage) -> Room:
    """The room of the provider `stage` really uses (`auto` resolved)."""
    return ROOMS[(stage, settings.resolved(stage))]


def create_service(settings: Settings, stage: Stage, engines: EmbeddedEngines) -> FrameProcessor:
    return room(settings, stage).create(settings, engines)


def describe_providers(settings: Settings) -> dict[str, str]:
    """Stage -> 'provider:model', as turn records and prices name them."""
    return {stage: room(settings, stage).describe(settings) for stage in STAGES}


def price_turn(
    usage: Usage,
    providers: dict[str, str],
    prices: PriceTable,
    *,
    transport: str,
    duration_secs: float,
) -> Cost:
    """US dollars per component for one turn, each stage priced by the room its record names
    ("provider:model"); embedded engines and providers without a price charge nothing."""
    components = dict.fromkeys(COMPONENTS, 0.0)
    for stage in STAGES:
        provider, _, model = providers.get(stage, "").partition(":")
        priced = next((r for (s, p), r in ROOMS.items() if s == stage and p.value == provider), None)
        if priced is not None and priced.price is not None:
            components[stage] = priced.price(usage, model, prices)
    if fee := TRANSPORT_FEES.get(transport):
        components["transport"] = fee(duration_secs, prices)
    return Cost(components=components, total=sum(components.values()))


def embedded_threads(settings: Settings) -> dict[str, int | None]:
    """Stage -> CPU threads of its embedded engine, None where a cloud service does the work."""
    return {stage: (r.threads(settings) if (r := room(settings, stage)).threads else None) for stage in STAGES}


def prepare_models(settings: Settings) -> None:
    """One-time setup of every embedded room that has one (assemble and verify the LLM
    weights, convert the STT model), whatever the configuration chooses now."""
    for each in ROOMS.values():
        if each.prepare:
            each.prepare(settings)


async def load_engine(settings: Settings, stage: Stage, engines: EmbeddedEngines) -> None:
    """Load and warm one stage's engine into `engines` (in a worker thread: it takes seconds)."""
    chosen = room(settings, stage)
    # `load_engines` loads only rooms with an engine, and every such room names its model.
    assert chosen.load is not None and chosen.model is not None
    started = time.monotonic()
    engine = await asyncio.to_thread(chosen.load, settings)
    if chosen.warm:
        await chosen.warm(engine, settings, ALL_TOOLS)
    setattr(engines, stage, engine)
    engines.models[stage] = chosen.model(engine)
    engines.load_seconds[stage] = round(time.monotonic() - started, 2)


async def load_engines(settings: Settings) -> EmbeddedEngines:
    """Load (side by side) every engine the configuration's rooms use, and the apology."""
    wanted = [stage for stage in STAGES if room(settings, stage).load]
    engines = EmbeddedEngines()

    async def apology():
        started = time.monotonic()
        engines.apology_sample_rate = AUDIO_OUT_RATE
        if settings.apology.strip():
            engines.apology = await asyncio.to_thread(
                piper.render, settings, settings.apology, engines.tts, AUDIO_OUT_RATE
            )
        logger.info(f"Apology rendered in {time.monotonic() - started:.2f}s")

    # The apology is spoken by the embedded voice, reused when the TTS stage loaded it (so it
    # waits for it), otherwise loaded for it beside the other engines.
    reuse_voice = room(settings, "tts") is piper.ROOM
    await asyncio.gather(
        *(load_engine(settings, stage, engines) for stage in wanted), *([] if reuse_voice else [apology()])
    )
    if reuse_voice:
        await apology()
    logger.info(f"Embedded engines ready: {engines.describe()} in {engines.load_seconds}")
    return engines
