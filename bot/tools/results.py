"""What the data tools share: the session's kept results and the pictures shown with them,
and numbers put the way a voice says them.

Every chartable result kept in `SessionResources` shares one shape, so any of them can be
charted again by id ("chart the previous result") instead of the model re-typing numbers:

    {"id": "r3", "kind": ..., "title": str, "labels": [str, ...],
     "series": [{"name": str, "values": [float, ...]}, ...],   # each as long as labels
     "figure": {...}, "summary": str, ...}                       # plus kind-specific fields
"""

import json
import math
from typing import Any

import plotly.graph_objects as go
from pipecat.services.llm_service import FunctionCallParams

from bot.session_resources import SessionResources

MAX_POINTS = 50


class ToolInputError(ValueError):
    """Bad tool input; its message is spoken back to the user by the LLM."""


class SayAgain(ToolInputError):
    """Input the user can only say again (a list heard without one of its numbers): the
    message is the whole answer, so the result carries it as its spoken sentence."""


def error_result(error: ToolInputError) -> dict[str, Any]:
    """A refused call's result: the reason, and for `SayAgain` the sentence that asks."""
    if isinstance(error, SayAgain):
        return {"error": str(error), "summary": f"{error}."}
    return {"error": str(error)}


def session_resources(params: FunctionCallParams) -> SessionResources | None:
    resources = getattr(params, "app_resources", None)
    return resources if isinstance(resources, SessionResources) else None


async def resources_for_a_result(params: FunctionCallParams, what: str) -> SessionResources | None:
    """The session's resources for a tool that keeps a result; None, with the call answered
    with why, when the session has none (`what` is not available) or is at its limit."""
    resources = session_resources(params)
    if resources is None:
        await params.result_callback({"error": f"{what} is not available in this session"})
        return None
    if problem := resources.limit_problem():
        await params.result_callback({"error": problem})
        return None
    return resources


def spoken_number(value: float) -> str:
    """A number as a voice says it: 30, 1.25, 0.86, 1,234, minus 0.5."""
    value = float(value)
    if not math.isfinite(value):
        return "not a number"
    sign = "minus " if value < 0 else ""
    a = abs(value)
    if a == 0:
        return "0"
    if a >= 100:
        text = f"{a:,.1f}"
    elif a >= 1:
        text = f"{a:.2f}"
    else:
        text = f"{a:.2g}"
        if "e" in text:
            text = f"{a:.8f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return sign + text


def rounded(value: float, digits: int = 3) -> float | int:
    """A compact number for the LLM context: 30 rather than 30.0, 0.862 rather than 0.8622."""
    value = round(float(value), digits)
    return int(value) if value.is_integer() else value


def figure_json(fig: go.Figure) -> dict[str, Any]:
    """The figure as plain JSON types (Plotly's encoder handles numpy and dates)."""
    return json.loads(fig.to_json())


def build_figure(
    chart_type: str,
    title: str,
    labels: list[str],
    series: list[dict[str, Any]],
    *,
    x: list[Any] | None = None,
    x_title: str = "",
    y_title: str = "",
    y_range: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """A Plotly figure spec (a JSON-safe dict) of one or more series over `labels` (or `x`)."""
    xs = list(x) if x is not None else list(labels)
    traces = []
    for s in series:
        name, values = s.get("name") or "", list(s["values"])
        if chart_type == "bar":
            traces.append(go.Bar(x=xs, y=values, name=name))
        elif chart_type == "line":
            traces.append(go.Scatter(x=xs, y=values, name=name, mode="lines+markers"))
        elif chart_type == "scatter":
            traces.append(go.Scatter(x=xs, y=values, name=name, mode="markers"))
        elif chart_type == "pie":
            traces.append(go.Pie(labels=list(labels), values=values, name=name, sort=False))
        else:
            raise ValueError(f"unknown chart type {chart_type!r}")
    layout: dict[str, Any] = {
        # "none" keeps the spec small; plotly.js applies its own defaults on the page.
        "template": "none",
        "title": {"text": title},
        "showlegend": len(series) > 1 or chart_type == "pie",
        "margin": {"l": 50, "r": 20, "t": 50, "b": 50},
    }
    if chart_type == "bar" and len(series) > 1:
        layout["barmode"] = "group"
    if chart_type != "pie":
        layout["xaxis"] = {"title": {"text": x_title}, "automargin": True}
        layout["yaxis"] = {"title": {"text": y_title}, "automargin": True}
        if y_range is not None:
            layout["yaxis"]["range"] = list(y_range)
    return figure_json(go.Figure(data=traces, layout=layout))


def keep_and_show(
    params: FunctionCallParams,
    resources: SessionResources,
    *,
    kind: str,
    visualization_type: str,
    data: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> str:
    """Keep the full result (with its figure) and queue its visualization; returns its id."""
    result_id = resources.remember(kind, data)
    resources.show(
        params.tool_call_id,
        {
            "type": visualization_type,
            "result_id": result_id,
            "title": data.get("title", ""),
            "summary": data.get("summary", ""),
            "figure": data["figure"],
            **(extra or {}),
        },
    )
    return result_id


def as_number(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise ToolInputError(f"{what} must be a number, not {value}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip().replace(",", ""))
        except ValueError:
            raise ToolInputError(f"{what} must be a number, not {value!r}") from None
    else:
        raise ToolInputError(f"{what} must be a number")
    if not math.isfinite(number):
        raise ToolInputError(f"{what} must be a finite number")
    return number
