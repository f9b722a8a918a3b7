"""The bot's RTVI messages as the events scenarios assert on.

Pipecat's own harness maps what a bot sends into events in two steps, and both are reused here
unchanged: `EvalClientSerializer` turns an RTVI server message into the frame the bot pushed,
and `EvalEventStream.frame_to_event` turns that frame into a scenario event (`llm_response`,
`function_call`, `bot_interrupted`, ...). Both modes feed the same messages through it: the text
mode takes them off the in-process pipeline's output, the audio mode off the `/ws` socket.

Extensions, for what this product sends beyond Pipecat's messages:

- `visualization`: a `server-message` of type `visualization` (a chart, a sentiment or live-data
  picture). Its text is `"<type> <chart type or Plotly trace types>: <title> | <what it
  shows>"`, e.g. `"chart bar: Monthly sales | 10, 20, 30"` (a chart's values) or
  `"sentiment bar: ... | I love my new job"` (the words scored), so `text_contains` can check
  what was drawn.
- `function_call_stopped` also carries `failed` in its args: whether the tool's result was an
  error, so `args: {failed: true}` asserts that a tool refused bad input.
"""

import asyncio
import json
from typing import Any

from pipecat.evals.events import EvalEventStream
from pipecat.evals.results import EvalTrace
from pipecat.evals.serializer import EvalClientSerializer

VISUALIZATION = "visualization"
# Messages too frequent to list in a scenario's trace (each token, each metric).
_UNTRACED = {"bot-llm-text", "bot-tts-text", "metrics", "bot-output", "user-llm-text"}


def visualization_event(data: dict[str, Any]) -> dict[str, Any]:
    viz = data.get("visualization") or {}
    traces = [t.get("type", "") for t in (viz.get("figure") or {}).get("data") or [] if isinstance(t, dict)]
    # A chart names its own type (a line chart is a Plotly "scatter" trace); others, their traces.
    kinds = viz.get("chart_type") or " ".join(dict.fromkeys(t for t in traces if t))
    label = " ".join(p for p in (viz.get("type", ""), kinds) if p)
    # What it shows: a chart's values, or the words a sentiment reading scored.
    values = next(
        (t.get("y") or t.get("values") for t in (viz.get("figure") or {}).get("data") or [] if isinstance(t, dict)),
        None,
    )
    shown = viz.get("text") or (
        ", ".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in values)
        if viz.get("type") == "chart" and isinstance(values, list)
        else ""
    )
    return {
        "type": VISUALIZATION,
        "text": f"{label}: {viz.get('title') or ''}".strip() + (f" | {shown}" if shown else ""),
        "kind": viz.get("type"),
        "tool_call_id": data.get("tool_call_id"),
    }


class MessageEvents:
    """Feeds one session's RTVI messages into a Pipecat `EvalEventStream`."""

    def __init__(self, stream: EvalEventStream, trace: EvalTrace):
        self.stream = stream
        self._trace = trace
        self._serializer = EvalClientSerializer()

    async def feed(self, message: dict[str, Any], at: float) -> None:
        kind = message.get("type")
        if kind == "error" or kind == "server-message":
            data = message.get("data") or {}
            self._trace.log(f"rtvi: {kind} {str(data.get('type') or data)[:160]}")
        elif kind not in _UNTRACED:
            self._trace.log(f"rtvi: {kind}")
        if kind == "server-message":
            if data.get("type") == VISUALIZATION:
                await self._append(visualization_event(data))
            return
        frame = await self._serializer.deserialize(json.dumps(message))
        if frame is None:
            return
        event = self.stream.frame_to_event(frame)
        if event is None:
            return
        if event["type"] == "function_call_stopped":
            result = (message.get("data") or {}).get("result")
            event["args"]["failed"] = isinstance(result, dict) and "error" in result
        await self._append(event)

    async def _append(self, event: dict[str, Any]) -> None:
        await self.stream.append(event)
        # Let a waiting matcher take it now: the next message may be an interruption, which
        # drops the events still queued (user-started-speaking comes just before one).
        await asyncio.sleep(0)
