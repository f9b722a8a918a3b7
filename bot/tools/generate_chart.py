"""Charts of data the user speaks, or of an earlier tool result, as Plotly figure specs.

Every chartable result kept in `SessionResources` shares one shape, so any of them can be
charted again by id ("chart the previous result") instead of the model re-typing numbers:

    {"id": "r3", "kind": ..., "title": str, "labels": [str, ...],
     "series": [{"name": str, "values": [float, ...]}, ...],   # each as long as labels
     "figure": {...}, "summary": str, ...}                       # plus kind-specific fields

What the data tools share lives beside it: results and figures in `results.py`, the numbers
the user said in `spoken_numbers.py`.
"""

import asyncio
import math
import re
from typing import Any

from pipecat.adapters.llm.schemas.direct_function import tool_options
from pipecat.services.llm_service import FunctionCallParams

from bot.conversation import current_request, user_texts
from bot.routing_hints import argument_choices, called_alone, only_choice, routing_constraint, routing_examples
from bot.session_resources import SessionResources
from bot.tools.results import (
    MAX_POINTS,
    SayAgain,
    ToolInputError,
    as_number,
    build_figure,
    error_result,
    keep_and_show,
    resources_for_a_result,
    rounded,
    spoken_number,
)
from bot.tools.spoken_numbers import heard_as_numbers, said_number_list, said_numbers, said_pairs, was_said

CHART_TYPES = ("bar", "line", "pie", "scatter")
MAX_SERIES = 5  # a kept result charted again may carry a few series
LATEST = ("latest", "last", "previous")


def _phrase(title: str) -> str:
    """A title inside a sentence: 'Monthly sales' -> 'monthly sales', 'CPU load' stays."""
    title = title.strip().rstrip(".")
    if len(title) > 1 and title[0].isupper() and not title[1].isupper():
        return title[0].lower() + title[1:]
    return title


def chart_summary(chart_type: str, title: str, labels: list[str], series: list[dict]) -> str:
    """One sentence the bot can say as is."""
    article = "an" if chart_type[0] in "aeiou" else "a"
    head = f"Here is {article} {chart_type} chart" + (f" of {_phrase(title)}" if title else "")
    positional = labels == [str(i + 1) for i in range(len(labels))]
    names = [f"value {label}" if positional else label for label in labels]
    first = series[0]["values"]
    if len(series) > 1:
        series_names = [s["name"] or f"series {i + 1}" for i, s in enumerate(series)]
        peaks = []
        for name, s in zip(series_names, series):
            i = max(range(len(labels)), key=lambda k: s["values"][k])
            peaks.append(f"{name} highest at {names[i]} with {spoken_number(s['values'][i])}")
        return f"{head} comparing {' and '.join(series_names)}: " + ", ".join(peaks) + "."
    if len(first) == 1:
        return f"{head}: {names[0]} at {spoken_number(first[0])}."
    hi = max(range(len(first)), key=lambda k: first[k])
    lo = min(range(len(first)), key=lambda k: first[k])
    if first[hi] == first[lo]:
        return f"{head}: all {len(first)} values are {spoken_number(first[0])}."
    if chart_type == "pie":
        total = sum(first)

        def share(value: float) -> str:
            percent = 100 * value / total
            return spoken_number(round(percent) if percent >= 1 else round(percent, 1))

        return (
            f"{head}: {names[hi]} is the largest share at {share(first[hi])} percent, "
            f"{names[lo]} the smallest at {share(first[lo])} percent."
        )
    return (
        f"{head}: {names[hi]} is highest at {spoken_number(first[hi])}, "
        f"{names[lo]} lowest at {spoken_number(first[lo])}."
    )


def chart_key_figures(labels: list[str], series: list[dict]) -> dict[str, Any]:
    """A few numbers for the LLM context (never the whole series)."""
    figures: dict[str, Any] = {"points": len(labels)}
    for s in series[:2]:
        values = s["values"]
        hi = max(range(len(values)), key=lambda k: values[k])
        lo = min(range(len(values)), key=lambda k: values[k])
        prefix = f"{s['name']} " if len(series) > 1 and s["name"] else ""
        figures[f"{prefix}highest"] = {labels[hi]: rounded(values[hi])}
        figures[f"{prefix}lowest"] = {labels[lo]: rounded(values[lo])}
    return figures


# --- validation -------------------------------------------------------------------------------


def find_result(resources: SessionResources, ref: str) -> dict[str, Any]:
    """An earlier chartable result by id ("r3", "3") or "latest"."""
    ref = ref.strip().lower()
    chartable = [r for r in resources.results.values() if r.get("labels") and r.get("series")]
    if ref in LATEST:
        if not chartable:
            raise ToolInputError("there is no earlier result with data to chart yet")
        return chartable[-1]
    result_id = f"r{ref}" if ref.isdigit() else ref
    result = resources.recall(result_id)
    if result is None:
        known = ", ".join(r["id"] for r in chartable[-5:]) or "none yet"
        raise ToolInputError(f"there is no earlier result called {ref!r}; the results with data are: {known}")
    if not (result.get("labels") and result.get("series")):
        raise ToolInputError(f"result {result_id} has no data series that can be charted")
    return result


def validated_chart(
    chart_type: str, labels: list[Any], series: list[tuple[str, list[Any]]]
) -> tuple[str, list[str], list[dict[str, Any]]]:
    """Normalized (chart_type, labels, series) or a ToolInputError with a speakable reason."""
    chart_type = (chart_type or "").strip().lower()
    if chart_type not in CHART_TYPES:
        raise ToolInputError(f"unknown chart type {chart_type!r}; use bar, line, pie or scatter")
    if not series or not series[0][1]:
        raise SayAgain(NO_NUMBERS)
    if len(series) > MAX_SERIES:
        raise ToolInputError(f"a chart can show at most {MAX_SERIES} series")
    n = len(series[0][1])
    if n > MAX_POINTS:
        raise ToolInputError(f"a chart can show at most {MAX_POINTS} points, not {n}")
    labels = [str(label).strip() for label in (labels or [])]
    if not labels:
        labels = [str(i + 1) for i in range(n)]
    if len(labels) != n:
        raise ToolInputError(f"there are {len(labels)} labels but {n} values; they must match")
    normalized: list[dict[str, Any]] = []
    for index, (name, values) in enumerate(series):
        name = (name or "").strip()
        what = name or ("the values" if index == 0 else f"series {index + 1}")
        if len(values) != n:
            raise ToolInputError(f"{what} has {len(values)} values but there are {n} labels")
        numbers = [as_number(v, f"each value of {what}") for v in values]
        normalized.append({"name": name, "values": numbers})
    if chart_type == "pie":
        if len(normalized) > 1:
            raise ToolInputError("a pie chart shows one series; use a bar chart to compare two")
        if any(v < 0 for v in normalized[0]["values"]):
            raise ToolInputError("a pie chart cannot show negative values; use a bar chart")
        if sum(normalized[0]["values"]) <= 0:
            raise ToolInputError("a pie chart needs at least one value above zero")
    return chart_type, labels, normalized


def numeric_axis(labels: list[str]) -> list[float] | None:
    """Scatter plots put numeric labels on a numeric x axis."""
    try:
        xs = [float(label.replace(",", "")) for label in labels]
    except ValueError:
        return None
    return xs if all(math.isfinite(x) for x in xs) else None


_REFERS_BACK = re.compile(
    r"\b(?:that|this|it|those|these|them|previous|last|latest|earlier|result|results|above|same)\b",
    re.I,
)
# Unlike "that" or "it", these may point at a list that follows: "Chart these scores: Alice 90,
# Bob 75" (but "Chart this as a pie" points back).
_POINTS_AT = re.compile(r"\b(?:this|these)\b", re.I)


_ASKS_FOR_CHART = re.compile(r"\b(?:chart|graph|plot)", re.IGNORECASE)
_NAMES_CHART_TYPE = re.compile(rf"\b({'|'.join(CHART_TYPES)})\s*+(?:chart|graph|plot)")
_ASKS_WHAT = re.compile(r"^\W*+(?:what|why|how|when|who|which|where)\b", re.IGNORECASE)


def chart_goes_on(words: str) -> bool:
    """Whether a request asks for a chart of data still to come: "Show me a bar chart of monthly
    sales" said with no number yet (a question about charts, or a chart of an earlier result,
    is not one)."""
    return (
        bool(_ASKS_FOR_CHART.search(words))
        and not _ASKS_WHAT.search(words)
        and not _REFERS_BACK.search(words)
        and not said_numbers(words)
    )


# A transcript writes a pause as a comma, a full stop or a colon.
_PIECE_BREAK = re.compile(r"[,.:;](?:\s++|$)|\band\b")


def dictated_items(request: str) -> list[str] | None:
    """The items of the data the request dictates, or None when it dictates none: two or more
    pieces (each after a pause or an "and") follow the words that ask for a chart, and those
    words do not point back at an earlier result ("Make a pie chart of my budget, rent 800,
    food 300, travel 200", however misheard; not "Now, show that as a pie chart, please"). A
    transcript that lost the word "chart" ("Show me a march out of monthly sales, January ten,
    ...") counts when nothing in it points back; its first piece is the request."""
    pieces = [p for p in _PIECE_BREAK.split(heard_as_numbers(request)) if p.strip()]
    for i, piece in enumerate(pieces):
        if _ASKS_FOR_CHART.search(piece):
            items = pieces[i + 1 :]
            return items if len(items) > 1 and not _points_back(piece, items) else None
    items = pieces[1:]
    return items if len(items) > 1 and not any(_points_back(p, items) for p in pieces) else None


def _points_back(piece: str, items: list[str]) -> bool:
    """Whether `piece` refers to an earlier result rather than to the `items` after it: "this"
    and "these" point at a list that follows when most of its items carry a number."""
    if _REFERS_BACK.search(_POINTS_AT.sub("", piece)):
        return True
    return bool(_POINTS_AT.search(piece)) and sum(bool(said_number_list(item)) for item in items) * 2 <= len(items)


def dictates_a_list(request: str) -> bool:
    return dictated_items(request) is not None


def misses_a_number(request: str) -> bool:
    """Whether the request dictates a list with an item heard without its number ("rent a
    hundred, foods re-hundred, travel two hundred"): the chart can only ask for it again."""
    items = dictated_items(request)
    return items is not None and any(not said_number_list(item) for item in items)


def chart_numbers(messages: list[dict]) -> set[float]:
    """The numbers a chart of the current request may draw: those the user said in it or
    earlier ("Germany has 83 million. ... Chart the population of France and Germany"). A
    request that dictates a list of its own draws only its own: a number from an earlier
    request beside this one's misheard labels ("apples" at the 10 of "January 10") would be
    made-up data."""
    request = current_request(messages)
    if dictates_a_list(request):
        return said_numbers(request)
    return set().union(*(said_numbers(text) for text in user_texts(messages)))


def _said_often_enough(typed: list[float], said: list[float]) -> bool:
    """Whether each typed value was said, a number said once standing for one value only (a
    list heard as "Jan Urmitin, Feb Urmitwenti, March thirty" is not three thirties)."""
    left = [abs(n) for n in said]
    for value in typed:
        match = next((i for i, n in enumerate(left) if was_said(value, {n})), None)
        if match is None:
            return False
        left.pop(match)
    return True


UNHEARD_LIST = "I did not catch a number for every item in that list; please say it again"
NO_NUMBERS = "I did not hear any numbers to chart; please say the values, or ask for an earlier chart"


def chart_constraint(messages: list[dict], parameters: dict[str, Any]) -> dict[str, Any] | None:
    """A chart needs numbers the user said or an earlier result: values may only be numbers
    from the user's messages, and `from_result` exists only once a tool has returned one.
    Without either there is nothing to chart (the model asks for the numbers instead)."""
    request = current_request(messages)
    if said_pairs(request) is not None or misses_a_number(request):
        # The user dictated the data: the tool reads it, and its title, from their words, so
        # the call names only the chart type; nothing said is typed again. A list with an
        # item heard without its number is asked for again (UNHEARD_LIST), nothing guessed.
        properties = {k: v for k, v in parameters["properties"].items() if k == "chart_type"}
        narrowed = {**parameters, "properties": properties}
        if len(named := set(_NAMES_CHART_TYPE.findall(request.lower()))) == 1:
            return only_choice(narrowed, chart_type=named.pop())
        return called_alone(narrowed)
    numbers = sorted(chart_numbers(messages))
    # An earlier result is charted only when the request brings no list of numbers of its
    # own ("chart that"); one that dictates numbers ("chart these scores: Alice 90, Bob 75")
    # charts them, even misheard.
    has_results = (
        any(isinstance(m, dict) and m.get("role") == "tool" for m in messages)
        and len(said_numbers(request)) < 2
        and not dictates_a_list(request)
    )
    if not numbers and not has_results:
        return None
    properties = dict(parameters["properties"])
    if numbers:
        # Said numbers carry no sign; either may be meant ("minus five").
        allowed = sorted({rounded(s * n, 9) for n in numbers for s in (1, -1)})
        for key in ("values", "values2"):
            properties[key] = {**properties[key], "items": {"type": "number", "enum": allowed}}
    else:
        properties.pop("values"), properties.pop("values2")
    if not has_results:
        properties.pop("from_result")
    return {**parameters, "properties": properties}


def _is_pie(chart_type: str) -> bool:
    return (chart_type or "").strip().lower() == "pie"


def _chart_data(
    params: FunctionCallParams,
    resources: SessionResources,
    title: str,
    labels: list[str] | None,
    values: list[float] | None,
    series_name: str,
    values2: list[float] | None,
    series2_name: str,
    from_result: str,
) -> tuple[str, list[str], list[tuple[str, list[Any]]], str]:
    """(title, labels, series, source) to chart, where source is "spoken" (the typed numbers,
    all of them said by the user), "words" (pairs read from the user's request) or the id of
    the earlier result charted."""
    context = getattr(params, "context", None)
    messages = context.get_messages() if context is not None else []
    # What the routing constraint read too: every message of this request, a pause or not.
    request = current_request(messages) if messages else ""
    pairs = said_pairs(request) if request else None
    title = (title or "").strip()

    def from_words(
        said: tuple[str, list[str], list[float]],
    ) -> tuple[str, list[str], list[tuple[str, list[Any]]], str]:
        words_title, words_labels, words_values = said
        return title or words_title, words_labels, [(series_name, words_values)], "words"

    def earlier(ref: str) -> tuple[str, list[str], list[tuple[str, list[Any]]], str]:
        result = find_result(resources, ref)
        series = [(s.get("name", ""), list(s["values"])) for s in result["series"]]
        return title or result.get("title", ""), list(result["labels"]), series, result["id"]

    own_list = dictates_a_list(request)
    if from_result and from_result.strip():
        if pairs and not values:
            return from_words(pairs)  # an earlier result named while the user dictates new data
        if not own_list:
            return earlier(from_result)

    typed = [as_number(v, "each value") for v in [*(values or []), *(values2 or [])]]
    if typed and user_texts(messages):
        heard = chart_numbers(messages)
        missing = [v for v in typed if not was_said(v, heard)]
    else:
        missing = []  # nothing typed (reported by validation), or no words to check against
    if own_list and not pairs and (not typed or missing or not _said_often_enough(typed, said_number_list(request))):
        # The user dictated a list the words cannot be read from whole: the typed values are
        # the model's guess at the rest, and an earlier result is another chart's data.
        raise SayAgain(UNHEARD_LIST)
    labels_fit = not labels or len(labels) == len(values or [])
    if typed and not missing and (labels_fit or not pairs):
        series = [(series_name, list(values or []))]
        if values2:
            series.append((series2_name, list(values2)))
        return title, list(labels or []), series, "spoken"
    if pairs:
        return from_words(pairs)
    if _REFERS_BACK.search(request) and resources.latest() is not None:
        try:
            return earlier("latest")  # "chart that": the numbers were re-typed or made up
        except ToolInputError:
            pass
    if missing:
        raise ToolInputError(
            "I can only chart numbers you tell me or an earlier result, and "
            f"{spoken_number(missing[0])} is not in what you said"
        )
    return title, list(labels or []), [(series_name, [])], "spoken"


# --- the tool ---------------------------------------------------------------------------------


@tool_options(timeout_secs=4.0)
@argument_choices(chart_type=CHART_TYPES)
@routing_constraint(chart_constraint)
@routing_examples(
    (
        "Show me a bar chart of monthly sales: January 10, February 20, March 30",
        {
            "chart_type": "bar",
            "title": "Monthly sales",
            "labels": ["January", "February", "March"],
            "values": [10, 20, 30],
        },
    ),
    (
        "Make a pie chart of my budget: rent 800, food 300",
        {"chart_type": "pie", "title": "Budget", "labels": ["rent", "food"], "values": [800, 300]},
    ),
    ("Chart that as a line chart", {"chart_type": "line", "from_result": "latest"}),
)
async def generate_chart(
    params: FunctionCallParams,
    chart_type: str,
    title: str = "",
    # Plain `list[...]` with a None default (not `| None`) keeps each schema a plain array.
    labels: list[str] = None,  # type: ignore[assignment]
    values: list[float] = None,  # type: ignore[assignment]
    series_name: str = "",
    values2: list[float] = None,  # type: ignore[assignment]
    series2_name: str = "",
    from_result: str = "",
):
    """Draw a chart of numbers the user gives, or of an earlier result by its id.

    Args:
        chart_type: bar, line, pie or scatter.
        title: Chart title.
        labels: One label per value.
        values: The numbers.
        series_name: Name of the values.
        values2: Optional second series of numbers.
        series2_name: Name of values2.
        from_result: Id of an earlier result (r2, or latest) to chart instead of values.
    """
    resources = await resources_for_a_result(params, "drawing charts")
    if resources is None:
        return
    try:
        title, labels, raw_series, source = _chart_data(
            params,
            resources,
            title,
            labels,
            values,
            series_name,
            values2,
            series2_name,
            from_result,
        )
        if source not in ("spoken", "words") and len(raw_series) > 1 and _is_pie(chart_type):
            # A pie of an earlier result with several series: its first series.
            title = f"{title}: {raw_series[0][0]}" if title else raw_series[0][0]
            raw_series = raw_series[:1]
        chart_type, labels, series = validated_chart(chart_type, labels, raw_series)
    except ToolInputError as e:
        await params.result_callback(error_result(e))
        return

    title = (title or "").strip()[:120]
    x = numeric_axis(labels) if chart_type == "scatter" else None
    figure = await asyncio.to_thread(build_figure, chart_type, title, labels, series, x=x)
    summary = chart_summary(chart_type, title, labels, series)
    result_id = keep_and_show(
        params,
        resources,
        kind="chart",
        visualization_type="chart",
        data={
            "title": title,
            "chart_type": chart_type,
            "labels": labels,
            "series": series,
            "source": source,
            "figure": figure,
            "summary": summary,
        },
        extra={"chart_type": chart_type},
    )
    key_figures = chart_key_figures(labels, series)
    await params.result_callback({"result_id": result_id, "summary": summary, "key_figures": key_figures})
