"""What a session's tools may use, handed to them as Pipecat's `FunctionCallParams.app_resources`.

Tools return only a compact result (a one-sentence summary and the key figures) to the LLM
context; anything bulky (a chart's full figure spec, a data series) is kept here under a short
id, so a later request ("chart the previous result") names the id instead of the model
re-typing numbers, and the visualization processor picks up what a tool call produced.
"""

import itertools
from dataclasses import dataclass, field
from typing import Any

from bot.records import SessionRecord
from bot.telemetry import Telemetry


@dataclass
class SessionResources:
    record: SessionRecord  # the live session record: its turns so far
    telemetry: Telemetry  # process-wide figures (sessions, latencies, resources)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    # tool_call_id -> visualization a tool produced, until the visualization processor sends it
    pending_visualizations: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_results: int = 50  # AGENT_MAX_RESULTS_PER_SESSION: each result has its picture
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def limit_problem(self) -> str | None:
        """Why no further result can be kept in this session, or None."""
        if len(self.results) >= self.max_results:
            return (
                f"this session has reached its limit of {self.max_results} results and pictures"
                " (AGENT_MAX_RESULTS_PER_SESSION); start a new session for more"
            )
        return None

    def remember(self, kind: str, data: dict[str, Any]) -> str:
        """Keep a tool's full result; returns the id the LLM can refer to (e.g. "r3")."""
        result_id = f"r{next(self._ids)}"
        self.results[result_id] = {"id": result_id, "kind": kind, **data}
        return result_id

    def recall(self, result_id: str) -> dict[str, Any] | None:
        return self.results.get(result_id)

    def latest(self, kind: str | None = None) -> dict[str, Any] | None:
        """The newest kept result (of a kind), for "chart that" without an id."""
        for result in reversed(self.results.values()):
            if kind is None or result["kind"] == kind:
                return result
        return None

    def show(self, tool_call_id: str, visualization: dict[str, Any]) -> None:
        """Queue a visualization for the page; it is sent with the sentence that presents it."""
        self.pending_visualizations[tool_call_id] = visualization
