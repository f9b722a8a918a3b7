"""What every provider room gives the registry (`bot/providers/__init__.py`), and the engines
the embedded rooms load once per process."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pipecat.processors.frame_processor import FrameProcessor

from bot.costs import PriceTable
from bot.records import Usage
from bot.settings import Provider, Settings

Stage = Literal["stt", "llm", "tts"]
STAGES: tuple[Stage, ...] = ("stt", "llm", "tts")


@dataclass
class EmbeddedEngines:
    """The process-wide engine of each embedded stage (None where a cloud or benchmark service
    serves it), shared by every session."""

    stt: Any = None
    llm: Any = None
    tts: Any = None
    load_seconds: dict[str, float] = field(default_factory=dict)
    # The apology a failed turn plays (16-bit mono PCM at `apology_sample_rate`), rendered
    # here so that it plays even when the TTS is what failed.
    apology: bytes = b""
    apology_sample_rate: int = 0
    models: dict[str, str | None] = field(default_factory=dict)

    def describe(self) -> dict[str, str | None]:
        """The embedded model each stage loaded; None where no model is loaded."""
        return {stage: self.models.get(stage) if getattr(self, stage) else None for stage in STAGES}


@dataclass(frozen=True)
class Room:
    """One provider at one stage: how it is named in records, what a turn's use of it costs, how
    its Pipecat service is made, and (embedded rooms) how its engine is prepared, loaded and warmed."""

    stage: Stage
    provider: Provider
    describe: Callable[[Settings], str]  # "provider:model", as turn records and prices name it
    create: Callable[[Settings, EmbeddedEngines], FrameProcessor]
    # The fee of one turn's usage of the described model; None: the provider charges nothing.
    price: Callable[[Usage, str, PriceTable], float] | None = None
    # Embedded rooms only:
    model: Callable[[Any], str] | None = None  # the loaded engine -> the model it runs
    prepare: Callable[[Settings], None] | None = None  # one-time setup (`python -m bot setup`)
    load: Callable[[Settings], Any] | None = None  # the engine, in a worker thread, once
    warm: Callable[[Any, Settings, list], Awaitable[None]] | None = None  # after loading, with the tools
    threads: Callable[[Settings], int] | None = None  # CPU threads the engine computes on
