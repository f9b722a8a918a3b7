"""Fixed-delay stand-ins for every stage, to measure what the server itself adds."""

from pipecat.processors.frame_processor import FrameProcessor

from bot.providers.base import STAGES, EmbeddedEngines, Room, Stage
from bot.providers.speakable import SPEAKABLE_TEXT
from bot.settings import Provider, Settings

BENCHMARK = "benchmark (fixed delays)"


def _delay_secs(settings: Settings, stage: Stage) -> float:
    return getattr(settings, f"benchmark_{stage}_delay_ms") / 1000


def _describer(stage: Stage):
    def describe(settings: Settings) -> str:
        return f"{BENCHMARK}:{getattr(settings, f'benchmark_{stage}_delay_ms'):g}ms"

    return describe


def create_stt(settings: Settings, _engines: EmbeddedEngines) -> FrameProcessor:
    from bot.providers.benchmark.services import BenchmarkSTTService

    return BenchmarkSTTService(delay_secs=_delay_secs(settings, "stt"), faults=settings.benchmark_faults)


def create_llm(settings: Settings, _engines: EmbeddedEngines) -> FrameProcessor:
    from bot.providers.benchmark.services import BenchmarkLLMService

    return BenchmarkLLMService(delay_secs=_delay_secs(settings, "llm"), faults=settings.benchmark_faults)


def create_tts(settings: Settings, _engines: EmbeddedEngines) -> FrameProcessor:
    from bot.providers.benchmark.services import BenchmarkTTSService

    return BenchmarkTTSService(
        delay_secs=_delay_secs(settings, "tts"), faults=settings.benchmark_faults, text_transforms=SPEAKABLE_TEXT
    )


ROOMS = [
    Room(stage=stage, provider=Provider.BENCHMARK, describe=_describer(stage), create=create)
    for stage, create in zip(STAGES, (create_stt, create_llm, create_tts))
]
