"""Grammar-routed tool calling: the streaming reply decoder, the grammar, the instructions and
the conversation rewrite. Pure functions, no model."""

import json
from zoneinfo import available_timezones

import pytest
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.processors.aggregators.llm_context import LLMContext

from bot.conversation import current_request
from bot.providers.tool_routing import (
    NO_TOOL,
    REPLY_PREFILL,
    TRIM_TO,
    HistoryWindow,
    ReplyDecoder,
    answer_json,
    call_json,
    reply_grammar,
    reply_instructions,
    route_conversation,
    to_routed_messages,
)
from bot.routing_hints import RoutableTool, routable_tools
from bot.tools.current_time import get_current_time

pytestmark = pytest.mark.unit

# Answers whose JSON encoding exercises every escape the decoder handles.
ANSWERS = [
    "Paris is the capital of France.",
    'He said "hi" and left.',
    "Line one\nline two\ttabbed\\backslash / slash\r\b\f",
    "Café au lait, naïve résumé",  # escaped as \u00e9 by json.dumps
    "",
    'Ends with a quote"',
]


def _pieces_at(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def _decode(pieces: list[str]) -> tuple[ReplyDecoder, list[str]]:
    decoder = ReplyDecoder()
    return decoder, [decoder.feed(p) for p in pieces]


TIME_CALL = {"tool": "get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}


def _time_tool() -> RoutableTool:
    return routable_tools(ToolsSchema([get_current_time]))[0]


def _weather_tool() -> RoutableTool:
    return RoutableTool(
        name="get_weather",
        description="Current weather in a city.",
        parameters={
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        examples=[("Is it raining in Oslo?", {"city": "Oslo"})],
    )


# --- ReplyDecoder: answers -------------------------------------------------------------------


@pytest.mark.parametrize("answer", ANSWERS)
@pytest.mark.parametrize("trailer", ["}", "}\n", '} {"tool": "x"}'])
def test_answer_split_at_every_boundary(answer: str, trailer: str):
    """One cut anywhere (inside the prefix, an escape, a \\uXXXX) never changes the result."""
    raw = json.dumps({"tool": NO_TOOL, "answer": answer})
    assert raw.endswith('"}')
    raw = raw[:-1] + trailer
    for cut in range(len(raw) + 1):
        decoder, outs = _decode(_pieces_at(raw, [cut]))
        assert "".join(outs) == answer, f"cut at {cut}: {outs!r}"
        assert decoder.is_answer and not decoder.is_tool_call


@pytest.mark.parametrize("answer", ANSWERS)
def test_answer_fed_one_character_at_a_time(answer: str):
    raw = answer_json(answer)
    decoder, outs = _decode(list(raw))
    assert "".join(outs) == answer
    # No piece ever contains JSON syntax that is not part of the answer itself.
    for out in outs:
        assert out == "" or out in answer
    # Nothing before the answer string's first character is emitted.
    prefix_len = raw.index('"answer": "') + len('"answer": "')  # up to the opening quote
    assert all(o == "" for o in outs[:prefix_len])


@pytest.mark.parametrize("size", [2, 3, 5, 7])
def test_answer_in_small_chunks_with_spacing_variants(size: int):
    answer = 'Tokyo is "big" \\ busy\nand caf\u00e9-rich'
    for raw in (
        json.dumps({"tool": "none", "answer": answer}),
        json.dumps({"tool": "none", "answer": answer}, separators=(",", ":")),
        '  {\n  "tool" :  "none" ,\n "answer":  ' + json.dumps(answer) + "\n}",
    ):
        pieces = [raw[i : i + size] for i in range(0, len(raw), size)]
        decoder, outs = _decode(pieces)
        assert "".join(outs) == answer
        assert decoder.is_answer


def test_answer_stops_at_closing_quote():
    decoder = ReplyDecoder()
    assert decoder.feed('{"tool": "none", "answer": "Hi') == "Hi"
    assert decoder.feed('."') == "."
    assert decoder.feed("}") == ""
    # Anything generated after the string (the model may run on) is never spoken.
    assert decoder.feed(' more "text" here') == ""
    assert decoder.feed('\\n"') == ""


def test_answer_mode_is_unknown_until_the_prefix_is_complete():
    decoder = ReplyDecoder()
    for piece in ['{"to', 'ol": "no', 'ne", "ans', 'wer": ']:
        assert decoder.feed(piece) == ""
        assert not decoder.is_answer and not decoder.is_tool_call
    assert decoder.feed('"Yes') == "Yes"
    assert decoder.is_answer


def test_escaped_unicode_split_inside_the_escape():
    decoder = ReplyDecoder()
    out = [decoder.feed(p) for p in ['{"tool": "none", "answer": "caf', "\\", "u0", "0e", "9!", '"}']]
    assert out == ["caf", "", "", "", "\u00e9!", ""]


def test_escaped_surrogate_pair_decodes_to_one_character():
    """json.dumps (ensure_ascii) and many models write non-BMP characters as surrogate pairs."""
    answer = "Nice \U0001f600 day"
    raw = json.dumps({"tool": "none", "answer": answer})
    assert "\\ud83d\\ude00" in raw
    decoder, outs = _decode(list(raw))
    text = "".join(outs)
    text.encode("utf-8")  # lone surrogates cannot be encoded (TTS, websocket)
    assert text == answer


def test_answer_decoder_tool_call_raises():
    decoder, _ = _decode(list(answer_json("Hello.")))
    with pytest.raises(ValueError):
        decoder.tool_call()


# --- ReplyDecoder: tool calls ----------------------------------------------------------------


@pytest.mark.parametrize("separators", [(", ", ": "), (",", ":")])
def test_tool_call_split_at_every_boundary(separators):
    raw = json.dumps(TIME_CALL, separators=separators)
    for cut in range(len(raw) + 1):
        for cut2 in (cut // 2, min(len(raw), cut + 3)):
            decoder, outs = _decode(_pieces_at(raw, sorted({cut, cut2})))
            assert outs == [""] * len(outs), f"tool call text leaked at {cut}: {outs!r}"
            assert decoder.is_tool_call and not decoder.is_answer
            assert decoder.tool_call() == ("get_current_time", {"timezone": "Asia/Tokyo"})


def test_tool_call_one_character_at_a_time_is_known_after_the_name():
    raw = call_json("get_weather", {"city": 'New "York"', "days": 3, "units": ["c", "f"]})
    decoder = ReplyDecoder()
    known_at = None
    for i, ch in enumerate(raw):
        assert decoder.feed(ch) == ""
        if decoder.is_tool_call and known_at is None:
            known_at = i
    # The mode is decided as soon as the tool name's closing quote arrives.
    assert known_at == raw.index('"get_weather"') + len('"get_weather"') - 1
    assert decoder.tool_call() == ("get_weather", {"city": 'New "York"', "days": 3, "units": ["c", "f"]})


@pytest.mark.parametrize("cut", [1, 10, 25, 40, -1])
def test_truncated_tool_call_raises_value_error(cut: int):
    raw = call_json("get_current_time", {"timezone": "Asia/Tokyo"})[:cut]
    decoder, _ = _decode([raw])
    with pytest.raises(ValueError):
        decoder.tool_call()


def test_tool_call_without_arguments_object_raises_value_error():
    decoder, _ = _decode(['{"tool": "get_current_time", "arguments": "Asia/Tokyo"}'])
    assert decoder.is_tool_call
    with pytest.raises(ValueError):
        decoder.tool_call()


def test_tool_named_like_none_prefix_is_a_tool_call():
    decoder, outs = _decode(['{"tool": "none', 'theless", "arguments": {}}'])
    assert outs == ["", ""]
    assert decoder.is_tool_call
    assert decoder.tool_call() == ("nonetheless", {})


# --- grammar and instructions ----------------------------------------------------------------


def _grammar_rules(grammar: str) -> dict[str, str]:
    header, *rules = grammar.splitlines()
    assert header == "%llguidance {}"
    return dict(rule.split(": ", 1) for rule in rules)


def test_reply_grammar_has_every_tool_and_the_none_branch():
    tools = [_time_tool(), _weather_tool()]
    rules = _grammar_rules(reply_grammar(tools))
    assert rules["start"] == "answer | call_0 | call_1"
    # The grammar continues the prefilled '{"tool": "': a reply is valid JSON once joined.
    assert rules["answer"] == '"none\\", \\"answer\\": \\"" ANSWER_TEXT "\\"}"'
    for i, tool in enumerate(tools):
        assert rules[f"call_{i}"] == f'"{tool.name}\\", \\"arguments\\": " arguments_{i} then? "}}"'
        assert json.loads(rules[f"arguments_{i}"].removeprefix("%json ")) == tool.parameters
    # A call may chain another one ("then"), which runs beside it.
    assert rules["then"] == '", \\"then\\": {\\"tool\\": \\"" (call_0 | call_1)'


def test_reply_grammar_answer_text_is_a_json_string_body():
    import re

    pattern = _grammar_rules(reply_grammar([]))["ANSWER_TEXT"]
    body = re.compile(pattern.strip("/"))
    for answer in ANSWERS:
        encoded = json.dumps(answer)[1:-1]
        assert body.fullmatch(encoded), encoded
    assert not body.fullmatch('a "raw" quote')
    assert not body.fullmatch("a raw\nnewline".replace("\\n", "\n"))


def test_reply_grammar_without_tools_allowed_has_only_the_none_branch():
    tools = [_time_tool(), _weather_tool()]
    grammar = reply_grammar(tools, allow_tools=False)
    assert _grammar_rules(grammar)["start"] == "answer"
    assert "get_current_time" not in grammar and "get_weather" not in grammar
    assert reply_grammar([]) == grammar


def test_prefilled_decoder_reads_the_continuation():
    decoder = ReplyDecoder(prefill=REPLY_PREFILL)
    assert decoder.feed('none", "answer": "Hi') == "Hi"
    assert decoder.is_answer
    decoder = ReplyDecoder(prefill=REPLY_PREFILL)
    decoder.feed('get_current_time", "arguments": {"timezone": "UTC"}}')
    assert decoder.tool_call() == ("get_current_time", {"timezone": "UTC"})


def test_reply_instructions_list_descriptions_and_examples():
    tools = [_time_tool(), _weather_tool()]
    text = reply_instructions(tools)
    lines = text.splitlines()
    assert 'To answer the user, reply {"tool": "none", "answer": "<your short spoken answer>"}.' in lines
    assert (
        '- {"tool": "get_current_time", "arguments": {"timezone": <IANA timezone name, e.g. '
        "Europe/Paris, Asia/Tokyo or UTC.>}}: Get the current date and time in a timezone."
    ) in lines
    assert '- {"tool": "get_weather", "arguments": {"city": <City name>}}: Current weather in a city.' in lines
    # Every @routing_examples pair is shown as a user line followed by the exact call.
    for tool in tools:
        assert tool.examples
        for said, args in tool.examples:
            i = lines.index(f"User: {said}")
            assert lines[i + 1] == f"Assistant: {call_json(tool.name, args)}"
    # Every assistant example line is itself a reply the grammar accepts in shape.
    for line in lines:
        if line.startswith("Assistant: "):
            reply = json.loads(line.removeprefix("Assistant: "))
            assert reply["tool"] in {"none", "get_current_time", "get_weather"}


def test_reply_instructions_without_tools_mention_no_tool_call():
    text = reply_instructions([])
    assert "call it instead" not in text
    assert "arguments" not in text
    assert "User: What is the capital of Italy?" in text


def test_parameter_without_description_falls_back_to_its_type():
    tool = RoutableTool(
        name="roll",
        description="Roll dice.",
        parameters={"type": "object", "properties": {"sides": {"type": "integer"}}, "required": []},
        examples=[],
    )
    assert (
        '- {"tool": "roll", "arguments": {"sides": <integer>}}: Roll dice.' in reply_instructions([tool]).splitlines()
    )


# --- routable_tools ---------------------------------------------------------------------------


def test_routable_tools_from_direct_function():
    (tool,) = routable_tools(ToolsSchema([get_current_time]))
    assert tool.name == "get_current_time"
    assert tool.description == "Get the current date and time in a timezone."
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "timezone": {
                "type": "string",
                "description": "IANA timezone name, e.g. Europe/Paris, Asia/Tokyo or UTC.",
                # The choices declared by @argument_choices become the grammar's enum.
                "enum": sorted(available_timezones()),
            }
        },
        "required": ["timezone"],
        "additionalProperties": False,
    }
    assert tool.examples == [
        ("What time is it in London?", {"timezone": "Europe/London"}),
        ("What's the date today in New York?", {"timezone": "America/New_York"}),
    ]


def test_routable_tools_from_function_schema_has_no_examples():
    schema = FunctionSchema(
        name="get_weather",
        description="Weather.",
        properties={"city": {"type": "string"}},
        required=["city"],
    )
    tools = routable_tools(ToolsSchema(standard_tools=[schema, get_current_time]))
    assert [t.name for t in tools] == ["get_weather", "get_current_time"]
    assert tools[0].examples == [] and tools[1].examples
    assert tools[0].parameters["properties"] == {"city": {"type": "string"}}


@pytest.mark.parametrize("not_tools", [None, [], "get_current_time", object()])
def test_routable_tools_of_non_schema_is_empty(not_tools):
    assert routable_tools(not_tools) == []


# --- to_routed_messages -----------------------------------------------------------------------


def test_to_routed_messages_maps_every_role():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What time is it in Tokyo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_current_time", "arguments": '{"timezone": "Asia/Tokyo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"time": "09:30"}'},
        {"role": "assistant", "content": "It is 9:30 in Tokyo."},
        {"role": "developer", "content": "Speak slowly."},
        {"role": "user", "content": [{"type": "text", "text": "And"}, {"type": "text", "text": "Paris?"}]},
    ]
    assert to_routed_messages(messages, "SYSTEM") == [
        {"role": "system", "content": "SYSTEM\n\nBe brief.\n\nSpeak slowly."},
        {"role": "user", "content": "What time is it in Tokyo?"},
        {
            "role": "assistant",
            "content": '{"tool": "get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}',
        },
        {"role": "user", "content": '(tool result) {"time": "09:30"}'},
        {"role": "assistant", "content": '{"tool": "none", "answer": "It is 9:30 in Tokyo."}'},
        {"role": "user", "content": "And Paris?"},
    ]


def test_to_routed_messages_edge_cases():
    messages = [
        {"role": "user", "content": None},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {"function": {"name": "a", "arguments": "not json"}},
                {"function": {"name": "b", "arguments": ""}},
            ],
        },
        {"role": "assistant", "content": ""},  # nothing said, nothing called: dropped
        {"role": "user", "content": 'Say "hi"'},
    ]
    assert to_routed_messages(messages, "S") == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": ""},
        # Parallel calls of one assistant message become one reply, chained by "then".
        {"role": "assistant", "content": '{"tool": "a", "arguments": {}, "then": {"tool": "b", "arguments": {}}}'},
        {"role": "assistant", "content": '{"tool": "none", "answer": "Let me check."}'},
        {"role": "user", "content": 'Say "hi"'},
    ]
    # The assistant turns are exactly what the decoder would read back.
    decoder, outs = _decode([to_routed_messages(messages, "S")[2]["content"]])
    assert decoder.tool_calls() == [("a", {}), ("b", {})]
    decoder, outs = _decode([to_routed_messages(messages, "S")[3]["content"]])
    assert "".join(outs) == "Let me check."


def test_to_routed_messages_does_not_mutate_input():
    messages = [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}]
    snapshot = json.loads(json.dumps(messages))
    to_routed_messages(messages, "S")
    to_routed_messages(messages, "S")
    assert messages == snapshot


def test_answer_complete_only_after_the_closing_quote():
    decoder = ReplyDecoder(prefill=REPLY_PREFILL)
    decoder.feed('none", "answer": "Paris is \\"big')
    assert not decoder.answer_complete
    decoder.feed('\\"."')
    assert decoder.answer_complete


# --- constraints from the conversation ------------------------------------------------------


def _chart_request(*messages: dict) -> tuple[list[RoutableTool], dict]:
    from bot.tools.generate_chart import generate_chart

    context = LLMContext(messages=list(messages), tools=ToolsSchema(standard_tools=[generate_chart]))
    conversation = route_conversation(context, "Be brief.", budget_chars=50_000)
    return conversation.tools, conversation.messages[0]


def test_chart_is_not_offered_without_numbers_or_results():
    tools, system = _chart_request({"role": "user", "content": "What is a pie chart used for?"})
    assert tools == []
    # The prompt (the cached prefix) still describes the tool in full.
    assert '"tool": "generate_chart"' in system["content"]


def test_chart_values_are_limited_to_numbers_the_user_said():
    tools, _ = _chart_request(
        {"role": "user", "content": "My weight was 80 last week."},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "Plot it with seventy nine and 78.5 as a line."},
    )
    (chart,) = tools
    properties = chart.parameters["properties"]
    allowed = [-80, -79, -78.5, 78.5, 79, 80]
    assert properties["values"]["items"] == {"type": "number", "enum": allowed}
    assert properties["values2"]["items"]["enum"] == allowed
    assert "from_result" not in properties  # no earlier result to point at
    grammar = reply_grammar(tools)
    assert json.loads(_grammar_rules(grammar)["arguments_0"].removeprefix("%json ")) == chart.parameters


def test_a_dictated_list_heard_without_a_number_names_only_the_chart_type():
    tools, _ = _chart_request(
        {"role": "user", "content": "Show me a bar chart of monthly sales: January 10, February 20, March 30"},
        {"role": "assistant", "content": "Here is a bar chart of monthly sales."},
        {
            "role": "user",
            "content": "Make a pie chart of my budget, it ate her bread, food free her bread, travel 200.",
        },
    )
    (chart,) = tools
    # Neither the earlier chart's numbers nor a guess at the missing ones: the tool asks for
    # the list again (UNHEARD_LIST), and the call has nothing to decode.
    assert set(chart.parameters["properties"]) == {"chart_type"}
    assert chart.determined_arguments() == {"chart_type": "pie"}


def test_chart_of_an_earlier_result_without_said_numbers():
    tools, _ = _chart_request(
        {"role": "user", "content": "How much memory are you using?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_realtime_data", "arguments": '{"metric": "memory"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"result_id": "r1"}'},
        {"role": "user", "content": "Chart that as a bar."},
    )
    (chart,) = tools
    properties = chart.parameters["properties"]
    assert "from_result" in properties
    assert "values" not in properties and "values2" not in properties


def test_sentiment_text_is_words_of_the_current_request():
    from bot.tools.analyze_sentiment import analyze_sentiment

    context = LLMContext(
        messages=[
            {"role": "user", "content": "Hello."},
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "Does great coffee sound positive to you?"},
        ],
        tools=ToolsSchema(standard_tools=[analyze_sentiment]),
    )
    (tool,) = route_conversation(context, None, budget_chars=50_000).tools
    allowed = tool.parameters["properties"]["text"]["enum"]
    assert {"great coffee", "Does great coffee sound positive to you?"} <= set(allowed)
    assert "Hello" not in allowed and "coffee great" not in allowed


@pytest.mark.parametrize(
    "request_, quoted",
    [
        ("Score this: great coffee.", "great coffee."),
        ("Is this review positive? The food was cold.", "The food was cold."),
        ("I love this phone, it makes me happy. How does that sound?", "I love this phone, it makes me happy."),
        ("I love this phone, it makes me happy, how does that sound?", "I love this phone, it makes me happy"),
        (
            "As this review positive, the food was cold and the waiter was rude.",
            "the food was cold and the waiter was rude.",
        ),
    ],
)
def test_words_the_request_gives_are_not_copied_into_the_call(request_, quoted):
    """The tool reads them from the request: the call names only its target."""
    from bot.tools.analyze_sentiment import analyze_sentiment, quoted_text

    context = LLMContext(
        messages=[{"role": "user", "content": request_}],
        tools=ToolsSchema(standard_tools=[analyze_sentiment]),
    )
    (tool,) = route_conversation(context, None, budget_chars=50_000).tools
    assert "text" not in tool.parameters["properties"]
    assert quoted_text(request_) == quoted


def _offered(text: str) -> list[str]:
    from bot.tools import ALL_TOOLS

    context = LLMContext(messages=[{"role": "user", "content": text}], tools=ToolsSchema(standard_tools=ALL_TOOLS))
    return [tool.name for tool in route_conversation(context, None, budget_chars=50_000).tools]


@pytest.mark.parametrize(
    "request_, offered",
    [
        ("I'm so happy, I just got engaged!", False),
        ("My boss was rude to me today.", False),
        ("How many people are connected right now?", False),
        ("Is this review good or bad: the soup was cold.", True),
        ("Do you think my previous sentence sounded upset?", True),
        ("What's the tone of what I just said?", True),
    ],
)
def test_sentiment_is_offered_only_when_an_assessment_is_asked_for(request_, offered):
    assert ("analyze_sentiment" in _offered(request_)) is offered


@pytest.mark.parametrize(
    "request_, offered",
    [
        ("What's the capital of Japan?", False),
        ("How much memory is the server using?", False),
        ("Is it morning yet in Seoul?", True),
        ("What's the date today?", True),
        ("What time is it in Lagos?", True),
    ],
)
def test_the_clock_is_offered_only_for_questions_about_time(request_, offered):
    assert ("get_current_time" in _offered(request_)) is offered


def test_stacked_constraints_all_apply():
    from bot.tools.analyze_sentiment import analyze_sentiment

    context = LLMContext(
        messages=[{"role": "user", "content": "Rate the sentiment of nice day."}],
        tools=ToolsSchema(standard_tools=[analyze_sentiment]),
    )
    (tool,) = route_conversation(context, None, budget_chars=50_000).tools
    assert "nice day" in tool.parameters["properties"]["text"]["enum"]  # the quoted-text one


def test_a_request_split_by_a_pause_is_one_request():
    """The turn ended at the colon and the bot had not answered: the words after it are still
    what is to be analyzed."""
    from bot.tools.analyze_sentiment import analyze_sentiment, quoted_text

    messages = [
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Is this sentence positive or negative?"},
        {"role": "user", "content": "I absolutely love my new job."},
    ]
    assert current_request(messages) == ("Is this sentence positive or negative? I absolutely love my new job.")
    context = LLMContext(messages=messages, tools=ToolsSchema(standard_tools=[analyze_sentiment]))
    (tool,) = route_conversation(context, None, budget_chars=50_000).tools
    # The tool reads those words from the request; the call does not copy them.
    assert "text" not in tool.parameters["properties"]
    assert quoted_text(current_request(messages)) == "I absolutely love my new job."
    # Once the bot has answered, the next message is a request of its own.
    answered = [*messages[:3], {"role": "assistant", "content": "Which sentence?"}, messages[3]]
    assert current_request(answered) == "I absolutely love my new job."


def test_a_follow_up_leans_on_the_request_before_it():
    from bot.tools.current_time import get_current_time

    messages = [
        {"role": "user", "content": "What time is it in Tokyo?"},
        {"role": "assistant", "content": "It is 9:30 in Tokyo."},
        {"role": "user", "content": "And in Paris?"},
    ]
    context = LLMContext(messages=messages, tools=ToolsSchema(standard_tools=[get_current_time]))
    assert [t.name for t in route_conversation(context, None, budget_chars=50_000).tools] == ["get_current_time"]
    unrelated = [{"role": "user", "content": "And in Paris?"}]
    context = LLMContext(messages=unrelated, tools=ToolsSchema(standard_tools=[get_current_time]))
    assert route_conversation(context, None, budget_chars=50_000).tools == []


def test_an_earlier_result_is_charted_only_for_a_request_without_numbers_of_its_own():
    """ "Chart these scores: Alice 90, Bob 75" dictates new data, though "these" could point
    back; "chart that" has no numbers and may chart the earlier result."""
    from pipecat.adapters.llm.schemas.direct_function import DirectFunctionWrapper

    from bot.tools.generate_chart import chart_constraint, generate_chart

    schema = DirectFunctionWrapper(generate_chart).to_function_schema()
    parameters = {"type": "object", "properties": schema.properties, "required": schema.required}
    earlier = [
        {"role": "user", "content": "Is this positive: I love it."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "analyze_sentiment", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"result_id": "r1"}'},
        {"role": "assistant", "content": "That sounds positive."},
    ]
    new_numbers = chart_constraint(
        [*earlier, {"role": "user", "content": "Chart these scores: Alice Nainty, Bob 75, Carol 2"}], parameters
    )
    assert "from_result" not in new_numbers["properties"]
    pointing_back = chart_constraint([*earlier, {"role": "user", "content": "Chart that as a bar chart."}], parameters)
    assert "from_result" in pointing_back["properties"]


@pytest.mark.parametrize(
    "request_, tool_name, arguments",
    [
        ("What time is it in Tokyo?", "get_current_time", {"timezone": "Asia/Tokyo"}),
        ("What time is it in New York right now?", "get_current_time", {"timezone": "America/New_York"}),
        ("What time is it in Japan?", "get_current_time", None),  # a country: the model's to name
        ("What time is it in London and in Paris?", "get_current_time", None),  # two calls
        ("What's the date today?", "get_current_time", None),
        ("How much memory is the server using?", "get_realtime_data", {"metric": "memory"}),
        ("How fast have your replies been?", "get_realtime_data", {"metric": "latency"}),
        ("How many words are in my messages, and how fast were you?", "get_realtime_data", None),
        ("Make a pie chart of my budget: rent 800, food 300", "generate_chart", {"chart_type": "pie"}),
        ("Show me a chart of my budget: rent 800, food 300", "generate_chart", None),  # which chart?
        # An item heard without its number: asked for again, with nothing to decode.
        (
            "Make a pie chart on my budget, rent a hundred, foods re-hundred, travel two hundred.",
            "generate_chart",
            {"chart_type": "pie"},
        ),
        # "these" points at the list that follows, whose first item has no number.
        (
            "Chart these scores as a bar chart: Alice Nainty, Bob-75, Carol-82, Dan-60.",
            "generate_chart",
            {"chart_type": "bar"},
        ),
        ("Is this review positive: the food was cold", "analyze_sentiment", {"target": "text"}),
        ("How did my last message sound?", "analyze_sentiment", None),
    ],
)
def test_a_request_that_leaves_one_value_per_argument_determines_the_call(request_, tool_name, arguments):
    from bot.tools import ALL_TOOLS

    context = LLMContext(messages=[{"role": "user", "content": request_}], tools=ToolsSchema(standard_tools=ALL_TOOLS))
    tools = {tool.name: tool for tool in route_conversation(context, None, budget_chars=50_000).tools}
    assert tools[tool_name].determined_arguments() == arguments


# --- where a session's conversation starts once it outgrows its budget ------------------------


def _turns(n: int) -> list[dict]:
    return [
        message
        for i in range(n)
        for message in (
            {"role": "user", "content": f"Question {i}: " + "blah " * 20},
            {"role": "assistant", "content": f"Answer {i}: " + "yada " * 20},
        )
    ]


def _first_question(kept: list[dict]) -> int:
    return int(kept[0]["content"].split()[1].rstrip(":"))


def test_a_conversation_over_its_budget_loses_its_oldest_turns_down_to_a_share_of_it():
    window = HistoryWindow()
    messages = [*_turns(10), {"role": "user", "content": "And now?"}]
    budget = sum(len(json.dumps(m)) for m in messages) - 10
    kept = window.trim(messages, budget)
    assert kept[0]["role"] == "user" and kept[-1] == messages[-1]
    assert sum(len(json.dumps(m)) for m in kept) <= budget * TRIM_TO
    # The next turns fit again: they start where this one did, without trimming.
    later = [*_turns(12), {"role": "user", "content": "Again?"}]
    assert _first_question(window.trim(later, budget)) == _first_question(kept)


def test_a_message_one_request_dropped_no_later_request_sends_back():
    """A speculative prefill's prompt (the answer being spoken added) is longer than the request
    that follows it; the request must not send back a message the prefill dropped, or every
    cached token after it is computed again."""
    window = HistoryWindow()
    conversation = [*_turns(6), {"role": "user", "content": "Chart it."}]
    request = [*conversation, {"role": "user", "content": "Thanks."}]
    budget = sum(len(json.dumps(m)) for m in request)  # the request alone fits
    prefill = window.trim([*conversation, {"role": "assistant", "content": "Here is the chart " * 5}], budget)
    assert _first_question(prefill) > 0
    assert _first_question(window.trim(request, budget)) == _first_question(prefill)
    # A window of its own (another session) keeps the whole conversation that fits.
    assert HistoryWindow().trim(request, budget) == request


def test_a_start_the_context_window_has_dropped_since_is_forgotten():
    window = HistoryWindow()
    messages = [*_turns(10), {"role": "user", "content": "And now?"}]
    budget = sum(len(json.dumps(m)) for m in messages) - 10
    kept = window.trim(messages, budget)
    # The context itself dropped its older half (ContextWindow), past the marked start.
    shorter = [*_turns(10)[len(messages) - len(kept) + 4 :], {"role": "user", "content": "Next?"}]
    assert window.trim(shorter, budget) == shorter
