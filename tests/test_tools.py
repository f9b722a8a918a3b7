"""The tools (generate_chart, analyze_sentiment, get_realtime_data, get_current_time) with real
session resources: a SessionRecord, a Telemetry and an LLMContext. Only FunctionCallParams is
faked, and each tool is invoked the way Pipecat invokes a direct function."""

import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pipecat.adapters.llm.schemas.direct_function import DirectFunctionWrapper
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.processors.aggregators.llm_context import LLMContext

from bot.records import SessionRecord, ToolCall, TurnLatency, TurnRecord
from bot.session_resources import SessionResources
from bot.telemetry import Telemetry
from bot.tools import ALL_TOOLS
from bot.tools.analyze_sentiment import NO_TEXT, NOTHING_SAID, analyze_sentiment, analyzer, quoted_by_user
from bot.tools.current_time import get_current_time
from bot.tools.generate_chart import NO_NUMBERS, UNHEARD_LIST, generate_chart
from bot.tools.get_realtime_data import get_realtime_data
from bot.tools.results import spoken_number
from bot.tools.spoken_numbers import said_numbers, said_pairs

pytestmark = pytest.mark.unit

SALES = {
    "chart_type": "bar",
    "title": "Monthly sales",
    "labels": ["January", "February", "March"],
    "values": [10, 20, 30],
}
SALES_REQUEST = "Show me a bar chart of monthly sales: January 10, February 20, March 30"
COMPACT_KEYS = {"result_id", "summary", "key_figures"}


@dataclass
class FakeParams:
    """The FunctionCallParams fields the tools read."""

    tool_call_id: str
    app_resources: Any
    context: Any
    arguments: dict[str, Any]
    results: list[Any] = field(default_factory=list)

    async def result_callback(self, result: Any, *, properties: Any = None) -> None:
        self.results.append(result)


def make_resources(telemetry: Telemetry | None = None) -> SessionResources:
    record = SessionRecord(session_id="s1", transport="test", started_at=time.time())
    return SessionResources(record=record, telemetry=telemetry or Telemetry())


async def call(tool, resources, _context: LLMContext | None = None, _id: str = "call-1", **arguments):
    """Invoke like Pipecat does; returns (the one result, the params)."""
    params = FakeParams(
        tool_call_id=_id,
        app_resources=resources,
        context=_context if _context is not None else LLMContext(),
        arguments=arguments,
    )
    await DirectFunctionWrapper(tool).invoke(arguments, params)
    assert len(params.results) == 1, params.results
    return params.results[0], params


def conversation(*user_texts: str) -> LLMContext:
    """A context whose last user message is the current request."""
    messages: list[dict] = []
    for text in user_texts:
        messages += [{"role": "user", "content": text}, {"role": "assistant", "content": "Okay."}]
    return LLMContext(messages=messages[:-1])


def assert_compact(result: dict) -> None:
    """Only the summary and a few figures enter the LLM context: no arrays, no figure."""
    assert set(result) == COMPACT_KEYS
    assert isinstance(result["summary"], str) and result["summary"].endswith(".")
    assert len(json.dumps(result)) < 500
    assert not any(isinstance(v, list) for v in result["key_figures"].values())
    assert len(result["key_figures"]) <= 6


def only_visualization(resources: SessionResources, tool_call_id: str = "call-1") -> dict:
    assert list(resources.pending_visualizations) == [tool_call_id]
    viz = resources.pending_visualizations[tool_call_id]
    json.dumps(viz)  # JSON-safe all the way down
    assert {"type", "result_id", "title", "summary", "figure"} <= set(viz)
    assert set(viz["figure"]) >= {"data", "layout"}
    return viz


# --- schemas, routing examples and registration -----------------------------------------------

EXPECTED_SCHEMAS = {
    generate_chart: (
        {
            "chart_type": "string",
            "title": "string",
            "labels": "array",
            "values": "array",
            "series_name": "string",
            "values2": "array",
            "series2_name": "string",
            "from_result": "string",
        },
        ["chart_type"],
    ),
    analyze_sentiment: ({"target": "string", "text": "string"}, []),
    get_realtime_data: ({"metric": "string"}, []),
}
JSON_TYPES = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
}


def validate(arguments: dict, properties: dict, required: list[str]) -> None:
    """The subset of JSON schema these tools use (jsonschema is not installed)."""
    assert set(required) <= set(arguments), f"missing {set(required) - set(arguments)}"
    for name, value in arguments.items():
        assert name in properties, f"unknown argument {name}"  # additionalProperties: false
        spec = properties[name]
        assert JSON_TYPES[spec["type"]](value), f"{name}={value!r} is not {spec['type']}"
        if spec["type"] == "array":
            assert all(JSON_TYPES[spec["items"]["type"]](item) for item in value)


@pytest.mark.parametrize("tool", list(EXPECTED_SCHEMAS), ids=lambda t: t.__name__)
def test_schema_and_routing_examples(tool):
    schema = ToolsSchema(standard_tools=[tool]).standard_tools[0]
    types, required = EXPECTED_SCHEMAS[tool]
    assert schema.name == tool.__name__
    assert schema.description and "\n" not in schema.description
    assert {name: spec["type"] for name, spec in schema.properties.items()} == types
    assert schema.required == required
    assert all(spec.get("description") for spec in schema.properties.values())
    # Flat: arrays hold plain numbers or strings only.
    for spec in schema.properties.values():
        if spec["type"] == "array":
            assert spec["items"] in ({"type": "number"}, {"type": "string"})
    # A few per tool, at most one per choice: each one lengthens every prompt.
    assert 2 <= len(tool.routing_examples) <= 5
    for utterance, arguments in tool.routing_examples:
        assert utterance
        validate(arguments, schema.properties, schema.required)
        # Properties in schema order, as the grammar writes them.
        order = list(schema.properties)
        assert [order.index(k) for k in arguments] == sorted(order.index(k) for k in arguments)


@pytest.mark.parametrize("tool", list(EXPECTED_SCHEMAS), ids=lambda t: t.__name__)
def test_timeout_is_set_and_small(tool):
    assert 1 <= tool._pipecat_timeout_secs <= 5


def test_all_tools_registered():
    assert ALL_TOOLS == [get_current_time, generate_chart, analyze_sentiment, get_realtime_data]
    names = [s.name for s in ToolsSchema(standard_tools=ALL_TOOLS).standard_tools]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    ("value", "spoken"),
    [
        (30.0, "30"),
        (1.25, "1.25"),
        (0.8622, "0.86"),
        (-0.78, "minus 0.78"),
        (1234.5, "1,234.5"),
        (1200.0, "1,200"),
        (0, "0"),
        (0.00004, "0.00004"),
    ],
)
def test_spoken_number(value, spoken):
    assert spoken_number(value) == spoken


# --- generate_chart ---------------------------------------------------------------------------


async def test_bar_chart_from_spoken_data():
    resources = make_resources()
    result, _ = await call(generate_chart, resources, _context=conversation(SALES_REQUEST), **SALES)
    assert "error" not in result
    assert_compact(result)
    assert result["summary"] == ("Here is a bar chart of monthly sales: March is highest at 30, January lowest at 10.")
    assert result["key_figures"] == {"points": 3, "highest": {"March": 30}, "lowest": {"January": 10}}
    viz = only_visualization(resources)
    assert viz["type"] == "chart" and viz["result_id"] == result["result_id"]
    assert viz["title"] == "Monthly sales" and viz["chart_type"] == "bar"
    (trace,) = viz["figure"]["data"]
    assert trace["type"] == "bar"
    assert trace["x"] == SALES["labels"] and trace["y"] == SALES["values"]
    assert viz["figure"]["layout"]["title"]["text"] == "Monthly sales"
    kept = resources.recall(result["result_id"])
    assert kept["kind"] == "chart" and kept["figure"] == viz["figure"]
    assert kept["labels"] == SALES["labels"]
    assert kept["series"] == [{"name": "", "values": [10.0, 20.0, 30.0]}]


async def test_line_chart_with_two_series():
    resources = make_resources()
    result, _ = await call(
        generate_chart,
        resources,
        chart_type="Line",
        title="Revenue and costs",
        labels=["Q1", "Q2", "Q3"],
        values=[5, 7.5, 6],
        series_name="revenue",
        values2=[4, 4.5, 5],
        series2_name="costs",
    )
    assert_compact(result)
    assert result["summary"] == (
        "Here is a line chart of revenue and costs comparing revenue and costs: "
        "revenue highest at Q2 with 7.5, costs highest at Q3 with 5."
    )
    data = only_visualization(resources)["figure"]["data"]
    assert [(t["type"], t["mode"], t["name"]) for t in data] == [
        ("scatter", "lines+markers", "revenue"),
        ("scatter", "lines+markers", "costs"),
    ]
    assert data[0]["y"] == [5, 7.5, 6] and data[1]["y"] == [4, 4.5, 5]
    assert data[0]["x"] == data[1]["x"] == ["Q1", "Q2", "Q3"]


async def test_pie_chart_shares():
    resources = make_resources()
    result, _ = await call(
        generate_chart,
        resources,
        chart_type="pie",
        title="Budget",
        labels=["rent", "food", "fun"],
        values=[1200, 600, 200],
    )
    assert result["summary"] == (
        "Here is a pie chart of budget: rent is the largest share at 60 percent, fun the smallest at 10 percent."
    )
    (trace,) = only_visualization(resources)["figure"]["data"]
    assert trace["type"] == "pie"
    assert trace["labels"] == ["rent", "food", "fun"] and trace["values"] == [1200, 600, 200]


async def test_scatter_uses_numeric_axis_and_unlabelled_values_get_positions():
    resources = make_resources()
    await call(generate_chart, resources, chart_type="scatter", labels=["150", "160", "170"], values=[50, 55, 61])
    (trace,) = only_visualization(resources)["figure"]["data"]
    assert trace["mode"] == "markers" and trace["x"] == [150, 160, 170]
    result, _ = await call(generate_chart, resources, _id="call-2", chart_type="bar", values=[3, 1])
    assert result["summary"] == "Here is a bar chart: value 1 is highest at 3, value 2 lowest at 1."


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"labels": ["a", "b"], "values": [1, 2, 3]}, "2 labels but 3 values"),
        ({"labels": ["a", "b"], "values": [1, math.nan]}, "finite"),
        ({"labels": ["a", "b"], "values": [1, math.inf]}, "finite"),
        ({"labels": ["a"], "values": ["lots"]}, "must be a number"),
        ({"labels": ["a"], "values": [True]}, "must be a number"),
        ({"values": list(range(51))}, "at most 50 points"),
        ({"chart_type": "pie", "labels": ["a", "b"], "values": [3, -1]}, "negative"),
        ({"chart_type": "pie", "labels": ["a", "b"], "values": [0, 0]}, "above zero"),
        ({"chart_type": "pie", "labels": ["a"], "values": [1], "values2": [2]}, "one series"),
        ({"chart_type": "histogram", "labels": ["a"], "values": [1]}, "unknown chart type"),
        ({"labels": ["a", "b"], "values": [1, 2], "values2": [1]}, "has 1 values"),
        ({"from_result": "r9"}, "no earlier result called 'r9'"),
        ({"from_result": "latest"}, "no earlier result"),
    ],
)
async def test_chart_validation_errors(arguments, reason):
    resources = make_resources()
    result, _ = await call(generate_chart, resources, **{"chart_type": "bar", **arguments})
    assert set(result) == {"error"} and reason in result["error"]
    assert not resources.results and not resources.pending_visualizations


@pytest.mark.parametrize("arguments", [{"labels": [], "values": []}, {}])
async def test_a_chart_with_no_numbers_asks_for_them_in_its_own_sentence(arguments):
    """Nothing to do but say the values: the refusal is the answer, spoken as the tool words it."""
    resources = make_resources()
    result, _ = await call(generate_chart, resources, **{"chart_type": "bar", **arguments})
    assert result == {"error": NO_NUMBERS, "summary": f"{NO_NUMBERS}."}
    assert not resources.results and not resources.pending_visualizations


async def test_chart_from_an_earlier_result_reuses_its_numbers():
    resources = make_resources()
    first, _ = await call(generate_chart, resources, **SALES)
    # "Chart that as a pie": the model names the id, and numbers it re-types are ignored.
    cases = [(first["result_id"], "r1"), ("latest", "r2"), (" R1 ", "r1"), ("1", "r1")]
    for n, (ref, source) in enumerate(cases):
        call_id = f"c{n + 2}"
        again, _ = await call(
            generate_chart, resources, _id=call_id, chart_type="pie", from_result=ref, values=[1, 1, 1]
        )
        assert_compact(again)
        trace = resources.pending_visualizations[call_id]["figure"]["data"][0]
        assert trace["labels"] == SALES["labels"] and trace["values"] == SALES["values"]
        kept = resources.recall(again["result_id"])
        # "latest" is the newest chartable result: here the pie chart just drawn.
        assert kept["source"] == source and kept["title"] == "Monthly sales"
    assert again["summary"].startswith("Here is a pie chart of monthly sales: March is the largest")


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("January 10, February 20, March 30", {10, 20, 30}),
        ("rent 1,200, food 300.50 and 30% off", {1200, 300.5, 30, 0.3}),
        ("1.2 million users", {1.2, 1_200_000}),
        ("twenty five and one hundred and five", {25, 105}),
        ("three thousand four hundred, one, two", {3, 3400, 1, 2}),
        ("minus five degrees", {5}),
        ("nothing here", set()),
        ("rent a hundred", {100}),
        # A number word misheard as a word that sounds like it, before a scale word.
        ("rent it hundred, food free hundred, travel to hundred", {800, 300, 200}),
        ("four for hundred", {4, 400}),
        ("go to hundreds of shops", set()),
    ],
)
def test_said_numbers(text, numbers):
    assert said_numbers(text) == numbers


@pytest.mark.parametrize(
    ("text", "pairs"),
    [
        (
            "Draw a pie chart of my expenses: rent 900, food 300, travel 150",
            ("my expenses", ["rent", "food", "travel"], [900, 300, 150]),
        ),
        ("apples 12, pears 7 and plums 3", ("", ["apples", "pears", "plums"], [12, 7, 3])),
        ("costs: Q1 is 1,200, Q2 was 1,500", ("", ["Q1", "Q2"], [1200, 1500])),
        ("scores: Anna 9.5 and Ben -3", ("", ["Anna", "Ben"], [9.5, -3])),
        ("Make a bar chart of fruit sold apples 12, pears 7", None),  # no colon, long label
        ("Chart the previous result", None),
        ("Show the top 3 results", None),
        ("Graph these numbers: 4, 8, 15 and -16", ("", ["1", "2", "3", "4"], [4, 8, 15, -16])),
        ("4, 8, 15", None),  # bare numbers only after a colon
        # Transcripts of requests dictated with pauses: a comma or full stop where each pause was.
        (
            "Draw a line chart of visitors Monday, forty, Tuesday, fifty five, Wednesday, seventy.",
            ("visitors", ["Monday", "Tuesday", "Wednesday"], [40, 55, 70]),
        ),
        (
            "Make a plot of my visitors. Monday forty. Tuesday, fifty five. Week two, 8.",
            ("my visitors", ["Monday", "Tuesday", "Week two"], [40, 55, 8]),
        ),
        ("Chart these scores: Alice 90, Bob-75, Carol-82.", ("", ["Alice", "Bob", "Carol"], [90, 75, 82])),
        # Its first item heard without its number: no list, rather than the list without Alice.
        ("Chart these scores: Alice Nainty, Bob-75, Carol-82, Dan-60.", None),
        (
            "Make a pie chart of my budget, rent a hundred, food three hundred, travel 200.",
            ("my budget", ["rent", "food", "travel"], [100, 300, 200]),
        ),
        # A colon between a label and its number, with or without one after the request.
        (
            "Plot my running distances. Week 1: 5, Week 2: 8, Week 3:12.",
            ("", ["Week 1", "Week 2", "Week 3"], [5, 8, 12]),
        ),
        ("Draw a chart of my runs: Week 1: 5, Week 2: 8", ("my runs", ["Week 1", "Week 2"], [5, 8])),
        (
            "Make up a chart of my budget, rent it hundred, food-free hundred, travel to hundred.",
            ("my budget", ["rent", "food", "travel"], [800, 300, 200]),
        ),
    ],
)
def test_said_pairs(text, pairs):
    assert said_pairs(text) == pairs


async def test_numbers_nobody_said_are_not_charted():
    resources = make_resources()
    context = conversation("Chart the population of France and Germany")
    result, _ = await call(
        generate_chart, resources, _context=context, chart_type="bar", labels=["France", "Germany"], values=[67, 83]
    )
    assert result == {
        "error": "I can only chart numbers you tell me or an earlier result, and 67 is not in what you said"
    }
    assert not resources.results and not resources.pending_visualizations
    # Numbers the user said earlier in the conversation count, in digits or words.
    context = conversation(
        "France has sixty seven million people", "Germany has 83 million", "Chart the population of France and Germany"
    )
    result, _ = await call(
        generate_chart,
        resources,
        _context=context,
        chart_type="bar",
        labels=["France", "Germany"],
        values=[67, 83_000_000],
    )
    assert "error" not in result
    # A request that dictates a list of its own draws only its own numbers: the earlier
    # request's, beside this one's misheard labels, would be made up.
    context = conversation(
        "Show me a bar chart of monthly sales: January 10, February 20, March 30",
        "Make a bar chart on fruit sales, apples, well, and animating, carrying salmon.",
    )
    result, _ = await call(
        generate_chart, resources, _context=context, chart_type="bar", labels=["apples", "animating"], values=[10, 30]
    )
    assert result == {"error": UNHEARD_LIST, "summary": f"{UNHEARD_LIST}."}


@pytest.mark.parametrize(
    ("request_text", "arguments"),
    [
        # Misheard beyond reading: the model reached for the earlier chart.
        (
            "Make a pie chart of my budget. Rent it hungry, food free hungry, travel to hungry.",
            {"from_result": "latest"},
        ),
        ("Make a pie chart on my budget, rent it hurried, food 300, travel two hungry.", {"from_result": "latest"}),
        # The one number heard, typed for every item.
        (
            "Show me a bar chart of monthly sales: Jan Urmitin, Feb Urmitwenti, March thirty.",
            {"labels": ["Jan", "Feb", "March"], "values": [30, 30, 30]},
        ),
        ("Make a pie chart on my budget, rent it hurried, food 300, travel two hungry.", {}),
    ],
)
async def test_a_dictated_list_heard_in_part_is_asked_for_again_not_filled_in(request_text, arguments):
    """A list the user dictated draws their own numbers or nothing: neither an earlier chart
    nor a number said once repeated for the items whose numbers were not heard."""
    resources = make_resources()
    await call(generate_chart, resources, _id="c1", _context=conversation(SALES_REQUEST), **SALES)
    result, _ = await call(
        generate_chart,
        resources,
        _id="c2",
        _context=conversation(SALES_REQUEST, request_text),
        chart_type="pie",
        **arguments,
    )
    assert result == {"error": UNHEARD_LIST, "summary": f"{UNHEARD_LIST}."}
    assert "c2" not in resources.pending_visualizations


async def test_a_dictated_list_may_repeat_a_number_said_twice():
    resources = make_resources()
    context = conversation("Chart my scores, Alice 90, Bob, um, ninety, Carol 75.")
    result, _ = await call(
        generate_chart,
        resources,
        _context=context,
        chart_type="bar",
        labels=["Alice", "Bob", "Carol"],
        values=[90, 90, 75],
    )
    assert "error" not in result
    assert resources.pending_visualizations["call-1"]["figure"]["data"][0]["y"] == [90, 90, 75]


async def test_chart_that_uses_the_earlier_result_not_retyped_numbers():
    resources = make_resources()
    first, _ = await call(generate_chart, resources, _id="c1", _context=conversation(SALES_REQUEST), **SALES)
    # The model copied numbers from its examples (or re-typed the result) instead of naming it.
    result, _ = await call(
        generate_chart,
        resources,
        _id="c2",
        _context=conversation(SALES_REQUEST, "Make a line chart of that"),
        chart_type="line",
        title="Monthly sales",
        labels=["a", "b", "c"],
        values=[20, 41, 10],
    )
    kept = resources.recall(result["result_id"])
    assert kept["source"] == first["result_id"] and kept["labels"] == SALES["labels"]
    trace = resources.pending_visualizations["c2"]["figure"]["data"][0]
    assert trace["y"] == SALES["values"]


async def test_dictated_pairs_win_over_a_named_result_or_garbled_numbers():
    resources = make_resources()
    await call(generate_chart, resources, _id="c1", **SALES)
    request = "Draw a pie chart of my expenses: rent 900, food 300, travel 150"
    # The model named the earlier result although the user dictated new data.
    result, _ = await call(
        generate_chart, resources, _id="c2", _context=conversation(request), chart_type="pie", from_result="latest"
    )
    assert result["summary"] == (
        "Here is a pie chart of my expenses: rent is the largest share at 67 percent, "
        "travel the smallest at 11 percent."
    )
    trace = resources.pending_visualizations["c2"]["figure"]["data"][0]
    assert trace["labels"] == ["rent", "food", "travel"] and trace["values"] == [900, 300, 150]
    assert resources.recall(result["result_id"])["source"] == "words"
    # The model garbled a number: the user's own pairs are charted.
    result, _ = await call(
        generate_chart,
        resources,
        _id="c3",
        _context=conversation(request),
        chart_type="bar",
        title="Expenses",
        labels=["rent", "food", "travel"],
        values=[900, 30, 150],
    )
    trace = resources.pending_visualizations["c3"]["figure"]["data"][0]
    assert trace["y"] == [900, 300, 150]
    # The model dropped a label: the user's pairs again.
    await call(
        generate_chart,
        resources,
        _id="c4",
        _context=conversation(request),
        chart_type="bar",
        labels=["rent", "food"],
        values=[900, 300, 150],
    )
    trace = resources.pending_visualizations["c4"]["figure"]["data"][0]
    assert trace["x"] == ["rent", "food", "travel"]
    assert result["summary"].startswith("Here is a bar chart of expenses: rent is highest at 900")


async def test_chart_from_live_data_and_sentiment_results():
    telemetry = Telemetry()
    for i, total in enumerate([0.9, 1.4]):
        telemetry.record_turn(_timed_turn(i + 1, total))
    resources = make_resources(telemetry)
    live, _ = await call(get_realtime_data, resources, _id="c1", metric="latency")
    chart, _ = await call(generate_chart, resources, _id="c2", chart_type="bar", from_result=live["result_id"])
    assert "error" not in chart
    trace = resources.pending_visualizations["c2"]["figure"]["data"][0]
    assert trace["y"] == [0.9, 1.4]
    # A sentiment result has a negative compound score: no pie of it.
    await call(analyze_sentiment, resources, _id="c3", target="text", text="This is awful.")
    pie, _ = await call(generate_chart, resources, _id="c4", chart_type="pie", from_result="latest")
    assert "negative" in pie["error"]


async def test_pie_of_an_earlier_result_with_two_series_shows_the_first():
    resources = make_resources()
    resources.record.turns += [
        TurnRecord(turn_id="t1", session_id="s1", index=1, user_text="hi there", bot_text="hello"),
        TurnRecord(turn_id="t2", session_id="s1", index=2, user_text="thanks", bot_text="you're welcome"),
    ]
    await call(get_realtime_data, resources, _id="c1", metric="this_session")
    result, _ = await call(generate_chart, resources, _id="c2", chart_type="pie", from_result="r1")
    assert result["summary"] == (
        "Here is a pie chart of words per turn in this session: your words: "
        "Turn 1 is the largest share at 67 percent, Turn 2 the smallest at 33 percent."
    )
    (trace,) = resources.pending_visualizations["c2"]["figure"]["data"]
    assert trace["values"] == [2, 1]


async def test_tools_without_session_resources_explain():
    for tool, arguments in ((generate_chart, SALES), (analyze_sentiment, {"text": "hi"}), (get_realtime_data, {})):
        result, _ = await call(tool, None, **arguments)
        assert set(result) == {"error"}


# --- analyze_sentiment ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("I absolutely love this, it is wonderful and makes me so happy!", "positive"),
        ("This is terrible. I hate it and I am really angry.", "negative"),
        ("The meeting is at three.", "neutral"),
    ],
)
async def test_sentiment_of_a_text(text, label):
    resources = make_resources()
    result, _ = await call(analyze_sentiment, resources, target="text", text=text)
    assert_compact(result)
    expected = analyzer().polarity_scores(text)
    assert result["key_figures"]["label"] == label
    assert result["key_figures"]["compound"] == round(expected["compound"], 3)
    assert result["summary"].startswith(f"That text sounds {label}, with a compound score of ")
    viz = only_visualization(resources)
    assert viz["type"] == "sentiment" and viz["label"] == label
    (trace,) = viz["figure"]["data"]
    assert trace["x"] == ["positive", "neutral", "negative", "compound"]
    assert trace["y"] == [expected[k] for k in ("pos", "neu", "neg", "compound")]
    if label == "positive":
        assert expected["compound"] >= 0.05
    elif label == "negative":
        assert expected["compound"] <= -0.05


async def test_sentiment_validation_errors():
    resources = make_resources()
    result, _ = await call(analyze_sentiment, resources, target="text", text="   ")
    assert result["summary"] == f"{NO_TEXT}."  # spoken at once, as the answer
    result, _ = await call(analyze_sentiment, resources, target="mood")
    assert "unknown target" in result["error"]
    result, _ = await call(analyze_sentiment, resources, _context=LLMContext(), target="last_turn")
    assert result["summary"] == f"{NOTHING_SAID}."
    assert not resources.results and not resources.pending_visualizations


async def test_last_turn_is_the_message_before_the_request():
    resources = make_resources()
    context = conversation(
        "My day was awful and everything went wrong.",
        "What's the sentiment of what I just said?",
    )
    result, _ = await call(analyze_sentiment, resources, _context=context)  # target defaults
    assert result["key_figures"]["label"] == "negative"
    assert result["summary"].startswith("Your last message sounds negative")
    kept = resources.recall(result["result_id"])
    assert kept["text"] == "My day was awful and everything went wrong."
    # Only the request itself: it is what gets scored, and the summary says so.
    alone = conversation("I am thrilled and this is great, how do I sound?")
    result, _ = await call(analyze_sentiment, resources, _context=alone, _id="c2")
    assert result["summary"].startswith("Your message sounds positive")
    # A request that gives its words apart from the question: those words are scored.
    given = conversation("My day was awful.", "I am thrilled, this is great! How do I sound?")
    result, _ = await call(analyze_sentiment, resources, _context=given, _id="c4")
    assert result["summary"].startswith("That text sounds positive")
    assert resources.recall(result["result_id"])["text"] == "I am thrilled, this is great!"
    # Words given in the call win over the default target.
    context = conversation("My day was awful.", "How does this sound: what a lovely surprise!")
    result, _ = await call(analyze_sentiment, resources, _context=context, _id="c3", text="What a lovely surprise!")
    assert result["summary"].startswith("That text sounds positive")


def test_quoted_by_user():
    said = ["Is this review positive: the food was COLD, and the waiter was rude!"]
    assert quoted_by_user("The food was cold and the waiter was rude.", said)
    assert not quoted_by_user("the food was cold and rude", said)
    assert not quoted_by_user("", said)


async def test_a_text_the_model_wrote_is_not_scored_as_the_users_words():
    resources = make_resources()
    context = conversation("My boss yelled at me today and I feel awful.", "What's the sentiment of what I just said?")
    result, _ = await call(
        analyze_sentiment, resources, _context=context, target="text", text="I just said something funny."
    )
    assert result["summary"].startswith("Your last message sounds negative")
    assert resources.recall(result["result_id"])["text"] == ("My boss yelled at me today and I feel awful.")
    # A text the user quotes is scored as given.
    context = conversation("Is this review positive: what a fantastic day")
    result, _ = await call(
        analyze_sentiment, resources, _context=context, _id="c2", target="text", text="What a fantastic day."
    )
    assert result["summary"].startswith("That text sounds positive")


async def test_sentiment_over_the_conversation():
    resources = make_resources()
    said = ["Hello there.", "I love how helpful you are!", "But this answer is wrong and awful."]
    context = conversation(*said, "How has my mood been during our conversation?")
    result, _ = await call(analyze_sentiment, resources, _context=context, target="conversation")
    assert_compact(result)
    compounds = [analyzer().polarity_scores(t)["compound"] for t in said]
    figures = result["key_figures"]
    assert figures["messages"] == 3
    assert figures["average_compound"] == round(sum(compounds) / 3, 3)
    assert figures["most_positive"] == "Message 2" and figures["most_negative"] == "Message 3"
    assert "message 2 was the most positive and message 3 the most negative" in result["summary"]
    viz = only_visualization(resources)
    (trace,) = viz["figure"]["data"]
    assert trace["mode"] == "lines+markers" and trace["y"] == compounds
    assert trace["x"] == ["Message 1", "Message 2", "Message 3"]
    kept = resources.recall(result["result_id"])
    assert [m["text"] for m in kept["messages"]] == said
    assert kept["series"] == [{"name": "compound", "values": compounds}]


async def test_sentiment_without_a_context_reads_the_record():
    resources = make_resources()
    resources.record.turns.append(TurnRecord(turn_id="t1", session_id="s1", index=1, user_text="I hate waiting."))
    params = FakeParams(tool_call_id="c1", app_resources=resources, context=None, arguments={})
    await analyze_sentiment(params)
    assert params.results[0]["key_figures"]["label"] == "negative"


# --- get_realtime_data ------------------------------------------------------------------------


def _timed_turn(index: int, total: float, **fields) -> TurnRecord:
    now = time.time()
    return TurnRecord(
        turn_id=f"t{index}",
        session_id="s1",
        index=index,
        started_at=now - 5 + index,
        ended_at=now - 4 + index,
        latency=TurnLatency.from_milestones(
            {"turn_end": total / 3, "llm_first_token": total / 2, "bot_audio_sent": total}
        ),
        **fields,
    )


@pytest.mark.parametrize(
    ("metric", "summary"),
    [
        ("latency", "No reply latencies have been recorded on this server yet."),
        ("cpu", "No CPU samples have been taken on this server yet."),
        ("memory", "No memory samples have been taken on this server yet."),
        ("this_session", "This session has no finished turns yet."),
    ],
)
async def test_realtime_data_without_data_says_so(metric, summary):
    resources = make_resources()
    result, _ = await call(get_realtime_data, resources, metric=metric)
    assert result == {"summary": summary, "key_figures": {}}
    assert not resources.results and not resources.pending_visualizations


async def test_latency_series():
    telemetry = Telemetry()
    turns = [_timed_turn(i + 1, total) for i, total in enumerate([0.8, 1.1, 2.3])]
    for turn in turns:
        telemetry.record_turn(turn)
    resources = make_resources(telemetry)
    result, _ = await call(get_realtime_data, resources, metric="latency")
    assert_compact(result)
    assert result["summary"] == (
        "Over the last 3 turns on this server, replies took 1.1 seconds at the median, from 0.8 to 2.3 seconds."
    )
    assert result["key_figures"]["median_seconds"] == 1.1
    kept = resources.recall(result["result_id"])
    assert kept["kind"] == "live-data" and kept["metric"] == "latency"
    assert kept["timestamps"] == [t.ended_at for t in turns]
    assert kept["series"] == [{"name": "seconds", "values": [0.8, 1.1, 2.3]}]
    viz = only_visualization(resources)
    assert viz["type"] == "live-data" and viz["metric"] == "latency"
    (trace,) = viz["figure"]["data"]
    assert trace["y"] == [0.8, 1.1, 2.3] and len(trace["x"]) == 3


async def test_sessions_now():
    telemetry = Telemetry()
    telemetry.session_started("webrtc")
    telemetry.session_started("ws")
    telemetry.session_ended("ws")
    resources = make_resources(telemetry)
    result, _ = await call(get_realtime_data, resources, metric="server_sessions")
    assert result["summary"] == ("There is 1 active session right now, and 2 sessions started since the server began.")
    assert result["key_figures"] == {"active": 1, "total": 2}
    data = only_visualization(resources)["figure"]["data"]
    assert [(t["name"], t["y"]) for t in data] == [("active", [1]), ("started", [2])]


async def test_cpu_and_memory_series_are_the_samples():
    telemetry = Telemetry()
    samples = [telemetry.sample_resources() for _ in range(3)]
    history = telemetry.snapshot()["resources"]["history"]
    resources = make_resources(telemetry)
    cpu, _ = await call(get_realtime_data, resources, _id="c1", metric="cpu")
    assert_compact(cpu)
    assert "percent CPU on average" in cpu["summary"]
    kept = resources.recall(cpu["result_id"])
    assert kept["series"][0]["values"] == [s["cpu_percent"] for s in samples]
    assert kept["timestamps"] == [h["timestamp"] for h in history]
    memory, _ = await call(get_realtime_data, resources, _id="c2", metric="memory")
    assert_compact(memory)
    assert memory["summary"].startswith("The server process is using ")
    trace = resources.pending_visualizations["c2"]["figure"]["data"][0]
    assert trace["y"] == [s["rss_bytes"] / 1024 / 1024 for s in samples]
    assert memory["key_figures"]["latest_mb"] == round(samples[-1]["rss_bytes"] / 1024 / 1024, 1)


async def test_session_stats():
    resources = make_resources()
    resources.record.turns += [
        TurnRecord(
            turn_id="t1",
            session_id="s1",
            index=1,
            user_text="What time is it in Paris?",
            bot_text="It is 3 PM in Paris.",
            tool_calls=[ToolCall(id="x", name="get_current_time")],
        ),
        TurnRecord(
            turn_id="t2",
            session_id="s1",
            index=2,
            user_text="Thanks!",
            bot_text="You're welcome.",
            status="interrupted",
        ),
    ]
    result, _ = await call(get_realtime_data, resources, metric="this_session")
    assert_compact(result)
    assert result["summary"] == (
        "This session has 2 finished turns so far: you said 7 words, I said 8, and I made 1 tool call."
    )
    kept = resources.recall(result["result_id"])
    assert kept["labels"] == ["Turn 1", "Turn 2"]
    assert kept["series"] == [{"name": "your words", "values": [6, 1]}, {"name": "my words", "values": [6, 2]}]
    assert kept["tool_calls_by_name"] == {"get_current_time": 1}
    assert kept["interrupted_turns"] == 1
    data = only_visualization(resources)["figure"]["data"]
    assert [t["x"] for t in data] == [["Turn 1", "Turn 2"]] * 2


async def test_unknown_metric():
    resources = make_resources()
    result, _ = await call(get_realtime_data, resources, metric="weather")
    assert "unknown metric" in result["error"]


def test_said_numbers_reads_sentence_ends_as_punctuation():
    from bot.tools.generate_chart import said_numbers

    assert said_numbers("March thirty.") == {30.0}
    assert said_numbers("January 10th. February 20, March 30.") == {10.0, 20.0, 30.0}


async def test_a_session_at_its_limit_of_results_is_told_so_by_every_data_tool():
    resources = make_resources()
    resources.max_results = 2
    context = conversation(SALES_REQUEST)
    for n in range(2):
        result, _ = await call(generate_chart, resources, context, _id=f"c{n}", **SALES)
        assert "result_id" in result
    for n, (tool, arguments) in enumerate(
        [
            (generate_chart, SALES),
            (analyze_sentiment, {"target": "text", "text": "I love it"}),
            (get_realtime_data, {"metric": "latency"}),
        ]
    ):
        refused, _ = await call(tool, resources, context, _id=f"over{n}", **arguments)
        assert "limit of 2 results and pictures (AGENT_MAX_RESULTS_PER_SESSION)" in refused["error"]
    assert len(resources.results) == 2 and len(resources.pending_visualizations) == 2


# --- get_current_time -------------------------------------------------------------------------


@pytest.mark.parametrize("timezone", ["America", "../../../etc/passwd", "/etc/hostname", "x" * 300, "Nowhere/City"])
async def test_a_timezone_that_is_not_one_is_refused_without_revealing_the_server(timezone):
    result, _ = await call(get_current_time, make_resources(), timezone=timezone)
    assert result["error"].startswith("unknown timezone")
    assert "/usr" not in result["error"] and "zoneinfo" not in result["error"].lower()
    assert len(result["error"]) < 200


async def test_the_time_in_a_real_timezone():
    result, _ = await call(get_current_time, make_resources(), timezone=" Europe/Paris ")
    assert result["timezone"] == "Europe/Paris" and ":" in result["time"]


async def _call_time_tool(timezone: str) -> dict:
    results = []

    async def result_callback(result, *, properties=None):
        results.append(result)

    await get_current_time(SimpleNamespace(result_callback=result_callback), timezone)
    assert len(results) == 1, results
    return results[0]


@pytest.mark.parametrize("bad", ["Mars/Olympus", "", "../../etc/passwd", "Europe/", "not a zone"])
async def test_time_tool_reports_unknown_timezones(bad):
    result = await _call_time_tool(bad)
    assert set(result) == {"error"}
    assert repr(bad.strip()) in result["error"] or repr(bad) in result["error"]
    assert "IANA" in result["error"]


@pytest.mark.parametrize("zone", ["Europe/Paris", " Asia/Tokyo ", "UTC"])
async def test_time_tool_gives_the_time_in_a_zone(zone):
    before = datetime.now(ZoneInfo(zone.strip()))
    result = await _call_time_tool(zone)
    after = datetime.now(ZoneInfo(zone.strip()))
    assert result["timezone"] == zone.strip()
    assert result["time"] in {before.strftime("%H:%M"), after.strftime("%H:%M")}
    assert re.fullmatch(r"\d{2}:\d{2}", result["time"])
    assert re.fullmatch(r"\d{1,2}:\d{2} (AM|PM)", result["spoken_time"])
    assert result["date"] in {before.strftime("%A, %B %-d, %Y"), after.strftime("%A, %B %-d, %Y")}
    # The sentence spoken as the answer names the place and says the time.
    place = {"Europe/Paris": "Paris", "Asia/Tokyo": "Tokyo", "UTC": "UTC"}[zone.strip()]
    days = {moment.strftime("%A, %B %-d") for moment in (before, after)}
    assert result["summary"] in {f"It is {result['spoken_time']} in {place}, on {day}." for day in days}


def test_time_tool_is_a_direct_function_with_a_timeout():
    from pipecat.adapters.llm.schemas.direct_function import DirectFunctionWrapper

    wrapper = DirectFunctionWrapper(get_current_time)
    schema = wrapper.to_function_schema()
    assert schema.name == "get_current_time"
    assert schema.required == ["timezone"]
    assert get_current_time.routing_examples
