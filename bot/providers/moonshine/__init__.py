"""Moonshine speech-to-text, embedded: the ONNX model converted once at setup, one engine per
process shared by every session."""

from pipecat.processors.frame_processor import FrameProcessor

from bot.providers.base import EmbeddedEngines, Room
from bot.providers.moonshine.model import MODEL_NAME
from bot.settings import Provider, Settings


def describe(_settings: Settings) -> str:
    return f"embedded:{MODEL_NAME}"


def prepare(settings: Settings) -> None:
    from bot.providers.moonshine.conversion import prepare_moonshine

    prepare_moonshine(settings.data_dir)


def load(settings: Settings):
    from bot.providers.moonshine.engine import MoonshineEngine

    engine = MoonshineEngine(settings.data_dir, threads=settings.stt_threads)
    engine.warm_up()
    return engine


def create(settings: Settings, engines: EmbeddedEngines) -> FrameProcessor:
    from bot.providers.moonshine.service import MoonshineSTTService

    return MoonshineSTTService(
        engine=engines.stt,
        interim_interval_secs=settings.stt_interim_interval_secs,
        # Interims are a guess the embedded LLM prefills from only while it is idle; beside a
        # reply's first sentence they would only slow it down (they share the two cores).
        cpu_busy=(lambda: engines.llm.replies_pending) if engines.llm else None,
    )


ROOM = Room(
    stage="stt",
    provider=Provider.EMBEDDED,
    describe=describe,
    create=create,
    model=lambda _engine: MODEL_NAME,
    prepare=prepare,
    load=load,
    threads=lambda settings: settings.stt_threads,
)
