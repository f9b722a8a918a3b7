"""Charts of data the user speaks, or of an earlier tool result, as Plotly figure specs.

Every chartable result kept in `SessionResources` shares one shape, so any of them can be
charted again by id ("chart the previous result") instead of the model re-typing numbers:

    {"id": "r3", "kind": ..., "title": str, "labels": [str, ...],
     "series": [{"name": str, "values": [float, ...]}, ...],   # each as long as labels
     "figure": {...}, "summary": str, ...}                       # plus kind-specific fields

The helpers here (figure building, spoken numbers, keeping and showing a result) are shared
by the other data tools.
"""

import asyncio
import json
import math
import re
from typing import Any

import plotly.graph_objects as go
from pipecat.adapters.llm.schemas.direct_function import tool_options
from pipecat.services.llm_service import FunctionCallParams

from bot.conversation import current_request, user_texts
from bot.routing_hints import argument_choices, called_alone, routing_constraint, routing_examples
from bot.session_resources import SessionResources

CHART_TYPES = ("bar", "line", "pie", "scatter")
MAX_POINTS = 50
MAX_SERIES = 5  # a kept result charted again may carry a few series
LATEST = ("latest", "last", "previous")


class ToolInputError(ValueError):
    """Bad tool input; its message is spoken back to the user by the LLM."""


# --- shared helpers ---------------------------------------------------------------------------


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
        raise ToolInputError("there are no numbers to chart; say the values, or name an earlier result")
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
    normalized = []
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


# --- the user's own words ---------------------------------------------------------------------
# A small model sometimes invents numbers (copied from a routing example) or re-types an
# earlier result instead of naming it, and sometimes names an earlier result while the user is
# dictating new data. Typed numbers are therefore checked against what the user actually said,
# and "label number" pairs the user dictated are read straight from their words.

_SMALL = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen".split()
    )
}
_TENS = {w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_SCALES = {"hundred": 100, "thousand": 1e3, "k": 1e3, "million": 1e6, "billion": 1e9}
# Every pattern that reads user or model text repeats only possessively (`*+`, `++`, `?+`) and
# is used with `match`/`fullmatch` on a bounded piece: no input can make it backtrack, so its
# cost is linear in what it reads (tests/test_tools.py checks the shapes). A chunk of a
# dictated list is taken apart word by word from its end rather than by one regex.
_DIGITS = r"\d{1,3}+(?:,\d{3})++(?:\.\d++)?+|\d++(?:\.\d++)?+|\.\d++"
_TOKENS = re.compile(rf"{_DIGITS}|[a-z]++|[%,;.]")
_AMOUNT = re.compile(rf"(?P<sign>-)?+[$€£]?+(?P<number>{_DIGITS})")
_CHUNK_BREAK = re.compile(r",\s++|;|\band\b|\.\s")
_TITLE = re.compile(r"\b(?:chart|graph|plot)\s++(?:of|for|on|about|showing|with)\s++(?P<title>.++)", re.I)
_SEPARATORS = {"=", ":", "is", "was", "at", "with"}
_LABEL_DASH_NUMBER = re.compile(r"(?<=[a-z])-(?=\d)", re.IGNORECASE)
# The longest request read for dictated pairs: far above a spoken list of values (a six-value
# chart request is ~120 characters); a longer one is not a dictation, and the model's typed
# values are used, checked against the numbers said.
MAX_DICTATION_CHARS = 1000
PARSERS = (_TOKENS, _AMOUNT, _CHUNK_BREAK, _TITLE, _LABEL_DASH_NUMBER)  # for the shape test (and the cues below)
_REFERS_BACK = re.compile(
    r"\b(?:that|this|it|those|these|them|previous|last|latest|earlier|result|results|above|same)\b",
    re.I,
)


_ASKS_FOR_CHART = re.compile(r"\b(?:chart|graph|plot)", re.IGNORECASE)
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


def said_numbers(text: str) -> set[float]:
    """Every number in `text`, in digits or words ("twenty five", "1.2 million", "30%"), with
    the variants a model may type for it (its scaled or percent form); signs are ignored."""
    found: set[float] = set()
    tokens = _TOKENS.findall(text.lower())
    total = current = 0.0
    in_words = False

    def flush() -> None:
        nonlocal total, current, in_words
        if in_words:
            found.add(total + current)
        total = current = 0.0
        in_words = False

    for i, token in enumerate(tokens):
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        if token[0].isdigit() or (token[0] == "." and token[1:2].isdigit()):
            flush()
            number = float(token.replace(",", ""))
            found.add(number)
            if following in _SCALES:
                found.add(number * _SCALES[following])
            if following in ("%", "percent"):
                found.add(number / 100)
        elif token in _SMALL or token in _TENS:
            # "five three" or "twenty thirty" are two numbers; "twenty five" is one.
            units_taken = current % 100 % 10 or 10 <= current % 100 < 20
            if in_words and (units_taken or (token in _TENS and current % 100)):
                flush()
            current += _SMALL.get(token, 0) + _TENS.get(token, 0)
            in_words = True
        elif token == "hundred" and in_words:
            current = max(current, 1) * 100
        elif token in ("thousand", "million", "billion") and in_words:
            found.add(total + current)  # "67 million" may be typed as 67, as with digits
            total += max(current, 1) * _SCALES[token]
            current = 0.0
        elif token == "and" and in_words and tokens[i - 1] in _SCALES:
            continue  # "one hundred and five"
        else:
            flush()
    flush()
    return found


def was_said(value: float, numbers: set[float]) -> bool:
    return any(math.isclose(abs(value), abs(n), rel_tol=1e-9, abs_tol=1e-9) for n in numbers)


def _spoken_amount(words: list[str]) -> float | None:
    """The number that the words at the end of `words` say ("ten", "eight hundred", "twenty
    five thousand"), taking them off `words`; None (and nothing taken) when none do."""
    tail = []
    while words and (w := words[-1].lower().strip(".,")) in (*_SMALL, *_TENS, *_SCALES, "and"):
        tail.insert(0, w)
        words.pop()
    if tail and tail[0] in _SCALES and words and words[-1].lower() == "a":
        words.pop()  # "a hundred"
        tail.insert(0, "one")
    while tail and tail[0] in ("and", "hundred", "thousand", "million", "billion", "k"):
        words.append(tail.pop(0))  # a number starts with its digits' words
    total = current = 0.0
    for w in tail:
        if w in _SMALL or w in _TENS:
            if current % 100 and (w in _TENS or current % 10 or 10 <= current % 100 < 20):
                words.extend(tail)  # "five three": two numbers, not one amount
                return None
            current += _SMALL.get(w, 0) + _TENS.get(w, 0)
        elif w == "hundred":
            current = max(current, 1) * 100
        elif w in _SCALES:
            total += max(current, 1) * _SCALES[w]
            current = 0.0
    return total + current if tail else None


def _label_and_amount(chunk: str) -> tuple[str, float] | None:
    """("rent", 900.0) of "rent 900", "rent is $900", "rent = 900", "rent nine hundred" or
    "rent 90 percent"; ("", -5.0) of a bare "minus 5"; None when `chunk` does not end in a
    number."""
    words = chunk.replace("=", " = ").split()
    if words and words[-1].lower() in ("%", "percent"):
        words.pop()
    elif words and words[-1].endswith("%"):
        words[-1] = words[-1][:-1]
    amount = _AMOUNT.fullmatch(words[-1]) if words else None
    if amount is not None:
        words.pop()
        negative, value = bool(amount["sign"]), float(amount["number"].replace(",", ""))
    elif (spoken := _spoken_amount(words)) is not None:
        negative, value = False, spoken
    else:
        return None
    if words and words[-1].lower() == "minus" and not negative:
        words.pop()
        negative = True
    if len(words) > 1 and words[-1].lower() in _SEPARATORS:
        words.pop()
    label = " ".join(words).strip(" ,")
    if label and not any(c.isalpha() for c in label):
        return None  # "12 7": a label names something
    return label, -value if negative else value


_MAX_LABEL_WORDS = 3


def _rejoined(
    chunks: list[str], parsed: list[tuple[str, float] | None]
) -> tuple[list[str], list[tuple[str, float] | None]]:
    """A pause between a label and its number is transcribed as a comma or a full stop
    ("Tuesday, fifty five.", "Week one, five."): a short chunk of words followed by a bare
    number is one pair, the chunk its label."""
    out_chunks, out_parsed, i = [], [], 0
    while i < len(chunks):
        words = chunks[i].split()
        if (
            i + 1 < len(chunks)
            and parsed[i + 1] is not None
            and not parsed[i + 1][0]  # the next chunk is a bare number
            and 0 < len(words) <= _MAX_LABEL_WORDS
            and words[0][:1].isalpha()
        ):
            out_chunks.append(f"{chunks[i]} {chunks[i + 1]}")
            out_parsed.append((" ".join(words).strip(" ,"), parsed[i + 1][1]))
            i += 2
        else:
            out_chunks.append(chunks[i])
            out_parsed.append(parsed[i])
            i += 1
    return out_chunks, out_parsed


def said_pairs(text: str) -> tuple[str, list[str], list[float]] | None:
    """(title, labels, values) when `text` dictates two or more "label number" pairs, as in
    "a pie chart of my expenses: rent 900, food 300 and travel 150"; otherwise None.

    A colon usually ends the request ("... my expenses: rent 900"), but a transcript also
    writes one between a label and its number ("Week 1: 5, Week 2: 8"): each reading is tried
    and the one that finds the most pairs wins."""
    if len(text) > MAX_DICTATION_CHARS:
        return None
    text = _LABEL_DASH_NUMBER.sub(" ", text)  # "Bob-75": a transcript's dash for a pause
    last_head, colon, last_data = text.rpartition(":")
    first_head, _, first_data = text.partition(":")
    readings = [
        _pairs(last_head, colon, last_data),
        _pairs(first_head, colon, first_data.replace(":", " : ")) if colon else None,
        _pairs("", "", text.replace(":", " : ")) if colon else None,
    ]
    return max((r for r in readings if r), key=lambda r: len(r[2]), default=None)


def _pairs(head: str, colon: str, data: str) -> tuple[str, list[str], list[float]] | None:
    """`said_pairs` of a request read as `head`, then `colon` (or none), then the data."""
    if not colon:
        head, data = "", f"{head} {data}".strip()
    chunks = [c for c in _CHUNK_BREAK.split(data.strip().rstrip(".!?")) if c.strip()]
    parsed = [_label_and_amount(c) for c in chunks]
    if not colon and len(chunks) > 2 and parsed[0] is None and parsed[1] and not parsed[1][0]:
        # "Draw a line chart of visitors Monday, forty, Tuesday, fifty five": the request's
        # last word is the first label.
        head, _, label = chunks[0].rstrip().rpartition(" ")
        if head:
            chunks, parsed = [head, label, *chunks[1:]], [None, None, *parsed[1:]]
    chunks, parsed = _rejoined(chunks, parsed)
    if not colon and len(parsed) > 2 and parsed[0] is None and all(parsed[1:]):
        # "Show me a bar chart of monthly sales, January ten. February 20.": a transcript
        # of a request dictated with pauses has no colon; its first piece is the request.
        head, chunks, parsed, colon = chunks[0], chunks[1:], parsed[1:], ":"
    if len(chunks) < 2:
        return None
    title = _TITLE.search(" ".join(head.split()))
    title = title["title"].strip() if title else ""
    if not all(parsed):
        return None
    labels = [label for label, _ in parsed]
    values = [value for _, value in parsed]
    if not any(labels):  # "graph these numbers: 4, 8, 15"
        return (title, [str(i + 1) for i in range(len(values))], values) if colon else None
    if not all(labels):
        return None
    if not colon and any(len(label.split()) > 3 for label in labels):
        return None  # without a colon, a long first "label" is the request itself
    return title, labels, values


# Two pauses or more: a transcript writes each as a comma or a full stop.
_LIST_BREAK = re.compile(r"[,.]\s")


def chart_numbers(messages: list[dict]) -> set[float]:
    """The numbers a chart of the current request may draw: those the user said in it or
    earlier ("Germany has 83 million. ... Chart the population of France and Germany"). A
    request that dictates a list of its own draws only its own: a number from an earlier
    request beside this one's misheard labels ("apples" at the 10 of "January 10") would be
    made-up data."""
    request = current_request(messages)
    if len(_LIST_BREAK.findall(f"{request} ")) > 2:
        return said_numbers(request)
    return set().union(*(said_numbers(text) for text in user_texts(messages)))


def chart_constraint(messages: list[dict], parameters: dict[str, Any]) -> dict[str, Any] | None:
    """A chart needs numbers the user said or an earlier result: values may only be numbers
    from the user's messages, and `from_result` exists only once a tool has returned one.
    Without either there is nothing to chart (the model asks for the numbers instead)."""
    if said_pairs(current_request(messages)) is not None:
        # The user dictated the data: the tool reads it, and its title, from their words, so
        # the call names only the chart type; nothing said is typed again.
        properties = {k: v for k, v in parameters["properties"].items() if k == "chart_type"}
        return called_alone({**parameters, "properties": properties})
    numbers = sorted(chart_numbers(messages))
    # An earlier result is charted only when the request brings no list of numbers of its
    # own ("chart that"); one that dictates numbers ("chart these scores: Alice 90, Bob 75")
    # charts them, even misheard.
    has_results = any(isinstance(m, dict) and m.get("role") == "tool" for m in messages) and (
        len(said_numbers(current_request(messages))) < 2
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

    def from_words() -> tuple[str, list[str], list[tuple[str, list[Any]]], str]:
        words_title, words_labels, words_values = pairs
        return title or words_title, words_labels, [(series_name, words_values)], "words"

    def earlier(ref: str) -> tuple[str, list[str], list[tuple[str, list[Any]]], str]:
        result = find_result(resources, ref)
        series = [(s.get("name", ""), list(s["values"])) for s in result["series"]]
        return title or result.get("title", ""), list(result["labels"]), series, result["id"]

    if from_result and from_result.strip():
        if pairs and not values:
            return from_words()  # an earlier result named while the user dictates new data
        return earlier(from_result)

    typed = [as_number(v, "each value") for v in [*(values or []), *(values2 or [])]]
    if typed and user_texts(messages):
        heard = chart_numbers(messages)
        missing = [v for v in typed if not was_said(v, heard)]
    else:
        missing = []  # nothing typed (reported by validation), or no words to check against
    labels_fit = not labels or len(labels) == len(values or [])
    if typed and not missing and (labels_fit or not pairs):
        series = [(series_name, list(values or []))]
        if values2:
            series.append((series2_name, list(values2)))
        return title, list(labels or []), series, "spoken"
    if pairs:
        return from_words()
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
        await params.result_callback({"error": str(e)})
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
