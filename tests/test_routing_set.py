"""The routing set (`evals/routing_set.json`) is well formed: no model, only its schema.

Every tool of `ALL_TOOLS` and "none" has at least 30 phrasings, every third one of each class
is held out, and the arguments an item expects are real parameters of its tool's schema.
"""

import json
from collections import Counter

import pytest
from helpers import ROOT
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema

from bot.providers.tool_routing import NO_TOOL
from bot.routing_hints import routable_tools
from bot.tools import ALL_TOOLS

pytestmark = pytest.mark.unit

SET_PATH = ROOT / "evals" / "routing_set.json"
MIN_PER_CLASS = 30
SPLITS = {"tune", "held_out"}
FIRST_BATCH = 33  # items per class before the held-out-only additions
MESSAGE_ROLES = {"user", "assistant", "tool"}

ROUTING_SET = json.loads(SET_PATH.read_text())
ITEMS = ROUTING_SET["items"]
TOOLS = {tool.name: tool for tool in routable_tools(ToolsSchema(ALL_TOOLS))}
CLASSES = [*TOOLS, NO_TOOL]


def test_header():
    assert ROUTING_SET["version"] == 1
    assert ROUTING_SET["description"].strip()
    assert isinstance(ITEMS, list) and ITEMS


def test_items_are_well_formed():
    required = {"id", "text", "tool", "arguments", "split"}
    for item in ITEMS:
        assert required <= set(item) <= required | {"history"}, item
        assert isinstance(item["text"], str) and item["text"].strip(), item["id"]
        assert item["tool"] in CLASSES, item["id"]
        assert item["split"] in SPLITS, item["id"]
        assert isinstance(item["arguments"], dict), item["id"]


def test_ids_are_unique():
    counts = Counter(item["id"] for item in ITEMS)
    assert not [i for i, n in counts.items() if n > 1]


def test_texts_are_unique():
    counts = Counter(" ".join(item["text"].lower().split()) for item in ITEMS)
    assert not [t for t, n in counts.items() if n > 1]


def test_speech_like_text():
    """Transcribed speech: no markdown, no line breaks."""
    for item in ITEMS:
        assert not any(c in item["text"] for c in "*#`_[]{}<>\n"), item["id"]


@pytest.mark.parametrize("cls", CLASSES)
def test_every_class_has_enough_phrasings(cls):
    assert sum(item["tool"] == cls for item in ITEMS) >= MIN_PER_CLASS


@pytest.mark.parametrize("cls", CLASSES)
def test_held_out_follows_the_documented_rule(cls):
    """In file order within a class, items 3, 6, ..., 33 are held out, and so is every item
    after the 33rd (the later additions, written before any routing run on them)."""
    in_class = [item for item in ITEMS if item["tool"] == cls]
    for n, item in enumerate(in_class, 1):
        held_out = n % 3 == 0 or n > FIRST_BATCH
        assert item["split"] == ("held_out" if held_out else "tune"), item["id"]
        assert item["id"].endswith(f"-{n:02d}"), item["id"]


def test_held_out_is_not_a_routing_example():
    """Held-out phrasings never appear among the few-shots the model is shown."""
    shown = {" ".join(said.lower().split()) for tool in TOOLS.values() for said, _ in tool.examples}
    held_out = {" ".join(i["text"].lower().split()) for i in ITEMS if i["split"] == "held_out"}
    assert not shown & held_out


def _values(expected):
    """The values an expected argument accepts (several for {"one_of": [...]})."""
    if isinstance(expected, dict) and set(expected) == {"one_of"}:
        assert isinstance(expected["one_of"], list) and expected["one_of"]
        return expected["one_of"]
    return [expected]


def _fits(value, spec) -> bool:
    if "enum" in spec and value not in spec["enum"]:
        return False  # the grammar makes any other value impossible
    kind = spec.get("type")
    if kind == "string":
        return isinstance(value, str)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list) and all(_fits(v, spec.get("items", {})) for v in value)
    return True


def test_arguments_are_real_parameters_of_the_tool():
    for item in ITEMS:
        if item["tool"] == NO_TOOL:
            assert item["arguments"] == {}, item["id"]
            continue
        properties = TOOLS[item["tool"]].parameters["properties"]
        for name, expected in item["arguments"].items():
            assert name in properties, f"{item['id']}: {name} is no parameter of {item['tool']}"
            for value in _values(expected):
                assert _fits(value, properties[name]), f"{item['id']}: {name}={value!r}"


def test_enumerated_arguments_use_the_documented_values():
    """Parameters whose docstring lists their values (metric, target, chart_type, timezone)."""
    from zoneinfo import ZoneInfo

    allowed = {
        ("generate_chart", "chart_type"): {"bar", "line", "pie", "scatter"},
        ("analyze_sentiment", "target"): {"text", "last_turn", "conversation"},
        ("get_realtime_data", "metric"): {"latency", "server_sessions", "cpu", "memory", "this_session"},
    }
    for item in ITEMS:
        for name, expected in item["arguments"].items():
            for value in _values(expected):
                if (item["tool"], name) in allowed:
                    assert value in allowed[item["tool"], name], item["id"]
                if name == "timezone":
                    ZoneInfo(value)  # a real IANA name


def test_history_is_openai_messages_before_the_turn():
    for item in ITEMS:
        for message in item.get("history", []):
            assert message["role"] in MESSAGE_ROLES, item["id"]
            if message["role"] == "assistant" and message.get("tool_calls"):
                for call in message["tool_calls"]:
                    assert call["function"]["name"] in TOOLS, item["id"]
                    json.loads(call["function"]["arguments"])
        if item.get("history"):
            assert item["history"][-1]["role"] == "assistant", item["id"]
