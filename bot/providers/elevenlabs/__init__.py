"""ElevenLabs text-to-speech, through Pipecat's own WebSocket service."""

from pipecat.processors.frame_processor import FrameProcessor

from bot.costs import PriceTable
from bot.providers.base import EmbeddedEngines, Room
from bot.providers.speakable import SPEAKABLE_TEXT
from bot.records import Usage
from bot.settings import Provider, Settings


def describe(settings: Settings) -> str:
    return f"elevenlabs:{settings.elevenlabs_model}"


def price(usage: Usage, model: str, prices: PriceTable) -> float:
    return usage.tts_characters / 1000 * prices.tts(model)


def create(settings: Settings, _engines: EmbeddedEngines) -> FrameProcessor:
    # Imported when chosen: a server that never uses it does not load its SDK.
    from pipecat.services.elevenlabs.tts import ElevenLabsTTSService

    api_key = settings.elevenlabs_api_key
    assert api_key is not None  # Settings resolves the TTS to ElevenLabs only with its key
    return ElevenLabsTTSService(
        api_key=api_key.get_secret_value(),
        url=settings.elevenlabs_url,
        settings=ElevenLabsTTSService.Settings(voice=settings.elevenlabs_voice_id, model=settings.elevenlabs_model),
        text_transforms=SPEAKABLE_TEXT,
    )


ROOM = Room(stage="tts", provider=Provider.ELEVENLABS, describe=describe, create=create, price=price)
