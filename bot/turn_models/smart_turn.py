"""Smart Turn v3 for every session on one ONNX session and one pool of threads, with Pipecat's
per-session buffering and decision."""

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import cache

from pipecat.audio.turn.base_turn_analyzer import EndOfTurnState
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.metrics.metrics import MetricsData, TurnMetricsData

from bot.turn_models.onnx import onnx_session

SMART_TURN_THREADS = 2  # its inference sits on the critical path at every turn end
# Turn ends of different sessions are analysed side by side, as with a thread per session, but
# no more at once than there are cores (batching them gains nothing on a CPU: the time grows
# with the batch).
SMART_TURN_WORKERS = os.cpu_count() or 2


class SharedSmartTurnModel:
    """One Smart Turn v3 ONNX session (thread-safe) and the threads every session's
    inference runs on."""

    def __init__(self) -> None:
        self.session = onnx_session(
            "pipecat.audio.turn.smart_turn.data", "smart-turn-v3.2-cpu.onnx", SMART_TURN_THREADS
        )
        self.executor = ThreadPoolExecutor(max_workers=SMART_TURN_WORKERS, thread_name_prefix="smart-turn")
        # Start every thread now (the pool would start them one busy moment at a time), so the
        # process's thread count is settled once the first session has begun.
        started = threading.Barrier(SMART_TURN_WORKERS)
        for _ in range(SMART_TURN_WORKERS):
            self.executor.submit(started.wait, 10)


class SharedSmartTurnAnalyzer(LocalSmartTurnAnalyzerV3):
    """Pipecat's local Smart Turn v3 (its buffering, features and decision) per session, on
    the shared model and threads."""

    def __init__(self, *, model: SharedSmartTurnModel, **kwargs):
        BaseSmartTurn.__init__(self, **kwargs)  # not LocalSmartTurnAnalyzerV3's: it loads a model
        self._log_data = False
        self._session = model.session
        self._shared_executor = model.executor

    @property
    def _model_executor(self) -> ThreadPoolExecutor:
        # Never stored in self._executor, so a session's cleanup leaves the shared threads alone.
        return self._shared_executor

    async def analyze_end_of_turn(self) -> tuple[EndOfTurnState, MetricsData | None]:
        """Pipecat's analysis; its time (the metric's "VAD stop to turn completion") also
        counts the wait for a free shared thread, which is part of the turn end's delay."""
        started = time.perf_counter()
        state, result = await super().analyze_end_of_turn()
        if isinstance(result, TurnMetricsData):
            result.e2e_processing_time_ms = (time.perf_counter() - started) * 1000
        return state, result


@cache
def smart_turn_model() -> SharedSmartTurnModel:
    return SharedSmartTurnModel()
