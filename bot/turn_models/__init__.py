"""The turn-taking models of every session: Silero VAD and Smart Turn v3, one of each per
process, shared by all sessions.

Pipecat's analyzers load a model per instance, i.e. per session: an ONNX Runtime session for
Silero and one for Smart Turn (with their own thread pools), plus a worker thread each, and
Silero hands every 20 ms of every session's audio to its own thread. Here:

- `SharedSileroVADAnalyzer` keeps only the model's recurrent state per session; the windows of
  all sessions that are due at the same moment are scored together, one batched run of one
  shared ONNX session on one shared thread (`SileroBatcher`). Silero scores each batch row
  independently, so a session's confidences are the same as alone.
- `SharedSmartTurnAnalyzer` keeps Pipecat's per-session audio buffering and runs its
  inference on one shared ONNX session and a shared pool of one thread per core.

`create_vad_analyzer` and `create_turn_stop_strategy` are what `bot/pipeline.py` builds each
session's analyzers with. The turn model's time is also reported as a Pipecat processing
metric named `TURN_MODEL_METRIC`, which RTVI forwards to the client in its `metrics` message
(Pipecat's own turn metric does not reach the client), so a benchmark can tell it apart from
the time the rest of the server takes.
"""

from collections.abc import Callable

from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy

from bot.settings import Settings
from bot.turn_models.silero import SharedSileroVADAnalyzer, silero_batcher
from bot.turn_models.smart_turn import SharedSmartTurnAnalyzer, smart_turn_model
from bot.turn_models.stop_strategy import TURN_MODEL_METRIC, MeasuredTurnAnalyzerStopStrategy

__all__ = [
    "TURN_MODEL_METRIC",
    "MeasuredTurnAnalyzerStopStrategy",
    "SharedSileroVADAnalyzer",
    "SharedSmartTurnAnalyzer",
    "silero_batcher",
    "smart_turn_model",
]


def load_turn_models(settings: Settings) -> None:
    """Load the shared models now rather than when the first session starts."""
    silero_batcher()
    if settings.smart_turn:
        smart_turn_model()


def create_vad_analyzer(settings: Settings) -> SharedSileroVADAnalyzer:
    return SharedSileroVADAnalyzer(
        batcher=silero_batcher(),
        params=VADParams(stop_secs=settings.vad_stop_secs),
        max_utterance_secs=settings.max_utterance_secs,
    )


def create_turn_stop_strategy(
    settings: Settings,
    goes_on: Callable[[str], bool] | None = None,
    is_whole: Callable[[str], bool] | None = None,
) -> TurnAnalyzerUserTurnStopStrategy:
    """`goes_on(words)`: whether a request's words say more is coming; `is_whole(words)`:
    whether they already ask for something whole (see the strategy)."""
    return MeasuredTurnAnalyzerStopStrategy(
        turn_analyzer=SharedSmartTurnAnalyzer(
            model=smart_turn_model(),
            params=SmartTurnParams(stop_secs=settings.turn_max_silence_secs),
        ),
        goes_on=goes_on,
        is_whole=is_whole,
        hold_secs=settings.dictation_hold_secs,
        question_secs=settings.question_end_secs,
    )
