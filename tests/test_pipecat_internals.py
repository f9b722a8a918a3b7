"""What the project takes from Pipecat's private side still exists in the installed Pipecat: the
accessors of `bot/pipecat_internals.py` work on real Pipecat objects, and every private method
or attribute one of our subclasses calls, overrides or reads without defining it is still
defined by its Pipecat base classes. A renamed one fails here, by name, on the upgrade."""

import ast
import importlib
import inspect
import textwrap

import pytest
from helpers import ROOT
from pipecat.observers.base_observer import BaseObserver
from pipecat.pipeline.worker_observer import WorkerObserver
from pipecat.processors.frameworks.rtvi.observer import RTVIObserver, RTVIObserverParams
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.elevenlabs.tts import ElevenLabsTTSService

from bot.pipecat_internals import (
    has_tts_websocket,
    observers_of,
    parse_host_header,
    reconnects,
    reports_audio_levels,
)
from bot.providers.benchmark.services import BenchmarkSTTService

pytestmark = pytest.mark.unit


def test_the_accessors_read_real_pipecat_objects():
    watcher = BaseObserver()
    assert observers_of(WorkerObserver(observers=[watcher])) == [watcher]
    assert reports_audio_levels(RTVIObserver(params=RTVIObserverParams(user_audio_level_enabled=True)))
    assert not reports_audio_levels(RTVIObserver(params=RTVIObserverParams(user_audio_level_enabled=False)))
    assert reconnects(DeepgramSTTService(api_key="key"))
    assert not reconnects(BenchmarkSTTService(delay_secs=0))
    assert not has_tts_websocket(
        ElevenLabsTTSService(api_key="key", settings=ElevenLabsTTSService.Settings(voice="voice"))
    )
    parsed = parse_host_header("Example.com:8080")
    assert (parsed.host, parsed.port) == ("Example.com", "8080")


def _our_classes_on_pipecat():
    """(class, its AST) for every class in bot/ with a Pipecat class among its bases."""
    for path in sorted((ROOT / "bot").glob("**/*.py")):
        if path.name == "__main__.py":  # runs the command line when imported
            continue
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        module = importlib.import_module(name)
        nodes = {n.name: n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)}
        for cls_name, node in nodes.items():
            cls = getattr(module, cls_name, None)
            if inspect.isclass(cls) and any(_is_pipecat(base) for base in cls.__mro__[1:]):
                yield cls, node


def _is_pipecat(cls: type) -> bool:
    return cls.__module__.split(".")[0] == "pipecat"


def _private_names_used(node: ast.ClassDef) -> tuple[set[str], set[str]]:
    """The private names (not dunders) the class body reads on `self` and calls on `super()`:
    the second are overrides, which go quiet when Pipecat renames the method."""
    on_self, on_super = set(), set()
    for n in ast.walk(node):
        if isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__"):
            if isinstance(n.value, ast.Name) and n.value.id == "self":
                on_self.add(n.attr)
            elif isinstance(n.value, ast.Call) and getattr(n.value.func, "id", None) == "super":
                on_super.add(n.attr)
    return on_self, on_super


def _defined_by_us(cls: type) -> set[str]:
    """What the project's own classes in `cls`'s MRO define: methods, class attributes, and
    attributes they assign on self."""
    defined = set()
    for klass in cls.__mro__:
        if _is_pipecat(klass) or klass.__module__.split(".")[0] != "bot":
            continue
        defined |= set(vars(klass))
        for n in ast.walk(ast.parse(_dedented(klass))):
            if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store):
                if isinstance(n.value, ast.Name) and n.value.id == "self":
                    defined.add(n.attr)
    return defined


def _dedented(klass: type) -> str:
    return textwrap.dedent(inspect.getsource(klass))


def _defined_by_pipecat(cls: type, name: str) -> bool:
    for klass in cls.__mro__:
        if not _is_pipecat(klass):
            continue
        if name in vars(klass) or f"self.{name}" in inspect.getsource(klass):
            return True
    return False


def test_every_private_name_our_subclasses_take_from_pipecat_is_still_there():
    checked, missing = 0, []
    for cls, node in _our_classes_on_pipecat():
        on_self, on_super = _private_names_used(node)
        for name in sorted((on_self - _defined_by_us(cls)) | on_super):
            checked += 1
            if not _defined_by_pipecat(cls, name):
                missing.append(f"{cls.__module__}.{cls.__name__} uses {name}, which no Pipecat base defines")
    assert not missing, "\n".join(missing)
    # The scan found the overrides it exists for (an empty scan would pass).
    assert checked >= 10, checked


def test_the_scan_sees_a_name_pipecat_does_not_define():
    from pipecat.processors.frame_processor import FrameProcessor

    class Renamed(FrameProcessor):
        async def process_frame(self, frame, direction):
            await super()._a_method_pipecat_renamed(frame)

    node = ast.parse(_dedented(Renamed)).body[0]
    assert "_a_method_pipecat_renamed" in _private_names_used(node)[1]
    assert not _defined_by_pipecat(Renamed, "_a_method_pipecat_renamed")
    assert _defined_by_pipecat(Renamed, "_start_interruption")
