"""Deepgram speech-to-text, through Pipecat's own streaming service."""

from pipecat.processors.frame_processor import FrameProcessor

from bot.costs import PriceTable
from bot.providers.base import EmbeddedEngines, Room
from bot.records import Usage
from bot.settings import Provider, Settings


def describe(settings: Settings) -> str:
    return f"deepgram:{settings.deepgram_model}"


def price(usage: Usage, model: str, prices: PriceTable) -> float:
    return usage.stt_audio_seconds / 60 * prices.stt(model)


def create(settings: Settings, _engines: EmbeddedEngines) -> FrameProcessor:
    # Imported when chosen: a server that never uses it does not load its SDK.
    from pipecat.services.deepgram.stt import DeepgramSTTService

    api_key = settings.deepgram_api_key
    assert api_key is not None  # Settings resolves the STT to Deepgram only with its key
    return DeepgramSTTService(
        api_key=api_key.get_secret_value(),
        base_url=settings.deepgram_url,
        settings=DeepgramSTTService.Settings(model=settings.deepgram_model, interim_results=True),
    )


ROOM = Room(stage="stt", provider=Provider.DEEPGRAM, describe=describe, create=create, price=price)
