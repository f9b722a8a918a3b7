"""Every reach into Pipecat's (and Starlette's) private attributes from outside the class that
owns them, in one place. Each is here because no public API gives the same: when an upgrade
renames one, `tests/test_pipecat_internals.py` fails and names it, instead of a feature going
quiet. (Private methods and state our own subclasses override or use are checked by the same
test, against the source of their Pipecat base classes.)"""

from pipecat.pipeline.worker_observer import WorkerObserver
from pipecat.processors.frameworks.rtvi.observer import RTVIObserver
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import WebsocketTTSService
from starlette._utils import parse_host_header  # the Host header parser Starlette's own middleware uses

__all__ = [
    "close_tts_websocket",
    "has_tts_websocket",
    "observers_of",
    "parse_host_header",
    "reconnects",
    "reports_audio_levels",
    "request_stt_reconnect",
]


def reports_audio_levels(observer: RTVIObserver) -> bool:
    """Whether RTVI's observer sends the user's audio level (it reads microphone audio only then)."""
    return observer._params.user_audio_level_enabled


def observers_of(worker_observer: WorkerObserver) -> list:
    """The observers a `WorkerObserver` fans events out to."""
    return list(worker_observer._observers)


def reconnects(service: STTService) -> bool:
    """Whether this STT service holds a connection it knows how to renew."""
    return type(service)._do_reconnect is not STTService._do_reconnect


async def request_stt_reconnect(service: STTService) -> None:
    """Pipecat's STT reconnect: it buffers and replays the audio that arrives meanwhile."""
    await service._request_reconnect()


def has_tts_websocket(service: WebsocketTTSService) -> bool:
    return service._websocket is not None


async def close_tts_websocket(service: WebsocketTTSService) -> None:
    """Close the TTS socket; Pipecat's own receive loop replaces it, as when the server closes it."""
    websocket = service._websocket
    if websocket is not None:  # it may have closed since the caller looked: this runs as a task
        await websocket.close()
