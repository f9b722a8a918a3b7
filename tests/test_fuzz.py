"""The standing fuzz suite, CI subset: property tests with hypothesis on the frame checker and
on every parser of the tools' arguments and the user's words (no exception escapes, whatever
the input), and `bench/fuzz.py`'s schemathesis campaign against the server's own
`/openapi.json`, with and without an API key, at a few cases per operation (no 5xx, every
refusal a documented status). The full campaign is `bench/fuzz.py` with its defaults."""

import asyncio
import json
import re
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipecat.frames.protobufs import frames_pb2

from bot.tools.analyze_sentiment import quoted_by_user, quoted_text_constraint
from bot.tools.generate_chart import chart_constraint, said_numbers, said_pairs, validated_chart
from bot.transports.client_messages import ALLOWED_MESSAGES, decode_client_json, message_problem
from bot.transports.serializer import CheckedProtobufSerializer
from client.server_process import ROOT

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
rtvi_messages = st.fixed_dictionaries(
    {"label": st.just("rtvi-ai"), "type": st.sampled_from([*ALLOWED_MESSAGES, "send-file", "raw-audio", ""])},
    optional={"id": st.text(max_size=8), "data": json_values | st.fixed_dictionaries({"content": json_values})},
)
# Text that looks like what the parsers look for: numbers, separators, runs of spaces.
wordy_text = st.lists(
    st.sampled_from(list("abcxyz019 ,.:;=-$%\n\t") + ["and ", "minus ", "chart of ", "twenty ", "percent"]),
    max_size=120,
).map("".join)


@pytest.mark.unit
@PROPERTY
@given(st.binary(max_size=2000) | st.text(max_size=2000))
def test_any_bytes_are_read_as_json_or_refused_with_a_value_error(data):
    try:
        decode_client_json(data)
    except ValueError as refused:
        assert str(refused)


@pytest.mark.unit
@PROPERTY
@given(json_values | rtvi_messages)
def test_any_parsed_message_is_accepted_or_refused_with_a_reason(message):
    problem = message_problem(message, max_text_chars=2000)
    assert problem is None or isinstance(problem, str) and problem
    if problem is None:
        assert message["type"] in ALLOWED_MESSAGES


@pytest.mark.unit
@PROPERTY
@given(
    st.binary(max_size=3000)
    | st.builds(
        lambda kind, data, rate, channels: _frame(kind, data, rate, channels),
        st.sampled_from(["audio", "message"]),
        st.binary(max_size=2000) | st.text(max_size=500).map(str.encode),
        st.sampled_from([0, 8000, 16000, 48000, -1]),
        st.integers(-1, 3),
    )
)
def test_the_serializer_turns_any_frame_into_a_frame_or_nothing(data):
    serializer = CheckedProtobufSerializer()
    frame = asyncio.run(serializer.deserialize(data))
    assert frame is None or frame.name


def _frame(kind: str, data: bytes, rate: int, channels: int) -> bytes:
    frame = frames_pb2.Frame()
    if kind == "audio":
        frame.audio.audio, frame.audio.sample_rate, frame.audio.num_channels = data, max(rate, 0), max(channels, 0)
    else:
        frame.message.data = data.decode("utf-8", "replace")
    return frame.SerializeToString()


@pytest.mark.unit
@PROPERTY
@given(wordy_text | st.text(max_size=300))
def test_the_users_words_are_parsed_without_an_exception(text):
    numbers = said_numbers(text)
    assert all(isinstance(n, float) for n in numbers)
    pairs = said_pairs(text)
    if pairs is not None:
        _title, labels, values = pairs
        assert len(labels) == len(values) >= 2
    # Any text with a word in it is, word for word, part of itself.
    assert quoted_by_user(text, [text]) == bool(re.search(r"[a-z0-9']", text.lower().replace("\u2019", "'")))


@pytest.mark.unit
@PROPERTY
@given(
    st.text(max_size=20),
    st.lists(json_values, max_size=8),
    st.lists(st.tuples(st.text(max_size=10), st.lists(json_values, max_size=8)), max_size=7),
)
def test_chart_arguments_of_any_shape_validate_or_say_why(chart_type, labels, series):
    try:
        kind, kept_labels, kept_series = validated_chart(chart_type, labels, series)
    except ValueError as refused:  # ToolInputError: spoken back to the user
        assert str(refused)
    else:
        assert all(len(s["values"]) == len(kept_labels) for s in kept_series)


@pytest.mark.unit
@PROPERTY
@given(
    st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "assistant", "tool"]), "content": st.text(max_size=200)}
        ),
        max_size=6,
    )
)
def test_routing_constraints_read_any_conversation(messages):
    from pipecat.adapters.llm.schemas.direct_function import DirectFunctionWrapper

    from bot.tools import ALL_TOOLS

    schemas = {tool.__name__: DirectFunctionWrapper(tool).to_function_schema() for tool in ALL_TOOLS}
    chart = schemas["generate_chart"]
    chart_parameters = {"type": "object", "properties": chart.properties, "required": chart.required}
    constrained = chart_constraint(messages, chart_parameters)
    assert constrained is None or "properties" in constrained
    sentiment = schemas["analyze_sentiment"]
    parameters = {"type": "object", "properties": sentiment.properties, "required": sentiment.required}
    assert "properties" in quoted_text_constraint(messages, parameters)


@pytest.mark.e2e
def test_the_api_campaign_finds_nothing_with_and_without_a_key(tmp_path):
    out = tmp_path / "fuzz.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.fuzz", "--max-examples", "5", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    summary = json.loads(out.read_text())
    assert [run["auth"] for run in summary["runs"]] == ["none", "api key"]
    for run in summary["runs"]:
        assert run["cases"] and run["cases"] > 100, run
        assert run["unique_failures"] == 0 and run["exit_status"] == 0, run["output_tail"]
    assert done.returncode == 0, done.stdout[-3000:]
