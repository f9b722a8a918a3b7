"""Contract tests of the OpenAI LLM path: the real server, on a mixed stack (embedded STT and
TTS, OpenAI LLM through Pipecat's `OpenAILLMService`), talks to a fake OpenAI API on loopback
that streams exactly the documented Chat Completions wire format (`tests/fakes/openai_server.py`),
and is driven over `/ws` with real speech."""

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from fakes.openai_server import FakeOpenAI, Rule, Text, ToolCall, last_user_text, message_text
from helpers import TURN_TIMEOUT, answer_to, is_turn_metrics

from bot.settings import Settings
from bot.tools import ALL_TOOLS
from client.server_process import start_server, stop_server
from client.speech import speech_pcm
from client.ws import VoiceClient

pytestmark = pytest.mark.e2e

API_KEY = "test-key"
MODEL = "gpt-4.1-mini"
SYSTEM_PROMPT = Settings.model_fields["system_prompt"].default
FRANCE = "What is the capital of France?"
TOKYO = "What time is it in Tokyo?"
ROUTED_TOOL_NOTE = "(tool result) "  # how routed mode hands a tool result back (tool_routing.py)


# --- the script the fake answers by ----------------------------------------------------------


def tool_result(body: dict) -> dict | None:
    """The tool result of the current turn: a `tool` message (native tool calls), or in routed
    mode the user-side note the product writes instead; None before any tool ran."""
    for message in reversed(body["messages"]):
        text = message_text(message)
        if message["role"] == "tool":
            return json.loads(text)
        if message["role"] == "user":
            return json.loads(text[len(ROUTED_TOOL_NOTE) :]) if text.startswith(ROUTED_TOOL_NOTE) else None
    return None


RULES = [
    Rule(
        "answer from the tool result",
        lambda body: tool_result(body) is not None,
        lambda body: Text(f"It is {tool_result(body)['spoken_time']} in Tokyo."),
    ),
    Rule(
        "call get_current_time",
        lambda body: "tokyo" in last_user_text(body).lower(),
        ToolCall("get_current_time", {"timezone": "Asia/Tokyo"}, fragments=4),
    ),
    Rule(
        "answer the capital",
        lambda body: "france" in last_user_text(body).lower(),
        Text("The capital of France is Paris."),
    ),
]


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAI(api_key=API_KEY) as server:
        yield server


def _serve(tmp_path_factory, fake: FakeOpenAI, name: str, **extra: str):
    log_path = tmp_path_factory.mktemp(name) / "server.log"
    process, url = start_server(
        log_path,
        OPENAI_API_KEY=API_KEY,
        AGENT_LLM_PROVIDER="openai",
        AGENT_OPENAI_BASE_URL=f"{fake.url}/v1",
        AGENT_OPENAI_MODEL=MODEL,
        AGENT_STT_PROVIDER="embedded",
        AGENT_TTS_PROVIDER="embedded",
        AGENT_GREETING="",  # nothing to wait for before the first question
        **extra,
    )
    return process, url.replace("http://", "ws://") + "/ws"


@pytest.fixture(scope="module")
def native_ws(tmp_path_factory, fake):
    process, ws_url = _serve(tmp_path_factory, fake, "native")
    yield ws_url
    stop_server(process)


@pytest.fixture(scope="module")
def routed_ws(tmp_path_factory, fake):
    process, ws_url = _serve(tmp_path_factory, fake, "routed", AGENT_LLM_TOOL_MODE="routed")
    yield ws_url
    stop_server(process)


@pytest.fixture
def script(fake):
    speech_pcm(FRANCE)  # synthesize before the clock matters
    speech_pcm(TOKYO)
    fake.script(*RULES)
    yield fake
    assert fake.errors() == [], fake.errors()


async def turn_metrics(client: VoiceClient, after: float) -> dict:
    message = await client.wait_for(is_turn_metrics, TURN_TIMEOUT, after=after)
    return message.data["turn"]


def tokyo_clock_around(at: float) -> set[str]:
    """Tokyo's HH:MM during the minute before `at` (the tool ran just before the request)."""
    zone = ZoneInfo("Asia/Tokyo")
    moment = datetime.fromtimestamp(at, zone)
    return {(moment - timedelta(seconds=s)).strftime("%H:%M") for s in (0, 30, 60)}


def assert_real_tokyo_time(result: dict, at: float) -> None:
    assert result["timezone"] == "Asia/Tokyo", result
    assert result["time"] in tokyo_clock_around(at), (result, at)
    hour, minute = map(int, result["time"].split(":"))
    assert result["spoken_time"] == f"{(hour - 1) % 12 + 1}:{minute:02d} {'AM' if hour < 12 else 'PM'}"


TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_time",
        "description": "Get the current date and time in a timezone.",
        "parameters": {
            "type": "object",
            "properties": {
                "timezone": {
                    "type": "string",
                    "description": "IANA timezone name, e.g. Europe/Paris, Asia/Tokyo or UTC.",
                }
            },
            "required": ["timezone"],
        },
    },
}


# --- native tool calls (OpenAILLMService) ------------------------------------------------------


async def test_streamed_text_answer(script, native_ws):
    fake = script
    async with VoiceClient(native_ws) as client:
        await client.ready()
        _, answer, _ = await answer_to(client, FRANCE)
        transcript = client.final_transcripts()[-1]
    assert "paris" in answer.lower(), answer

    [request] = fake.completions()
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    body = request.body
    assert body["model"] == MODEL
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert "response_format" not in body
    messages = body["messages"]
    assert messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert messages[-1]["role"] == "user"
    said = message_text(messages[-1]).lower()
    assert "capital of france" in said and transcript.lower().strip() in said, (said, transcript)
    tools = body["tools"]
    assert [t["function"]["name"] for t in tools] == [tool.__name__ for tool in ALL_TOOLS]
    declared = tools[0]
    assert declared["type"] == "function"
    assert declared["function"]["description"] == TIME_TOOL["function"]["description"]
    parameters = declared["function"]["parameters"]
    assert parameters["type"] == "object" and parameters["required"] == ["timezone"]
    assert parameters["properties"] == TIME_TOOL["function"]["parameters"]["properties"]


async def test_streamed_tool_call(script, native_ws):
    fake = script
    async with VoiceClient(native_ws) as client:
        await client.ready()
        speech_end, answer, _ = await answer_to(client, TOKYO)
        started = await client.wait_for(lambda m: m.type == "llm-function-call-started", 1, after=speech_end)
        turn = await turn_metrics(client, speech_end)
    assert started.data.get("function_name") == "get_current_time", started.data

    first, second = fake.completions()
    assert [first.rule, second.rule] == ["call get_current_time", "answer from the tool result"]
    assert "tokyo" in last_user_text(first.body).lower()
    # The follow-up request replays the call and carries the real tool's result.
    assistant = [m for m in second.body["messages"] if m["role"] == "assistant" and m.get("tool_calls")]
    [call] = assistant[-1]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_current_time"
    assert json.loads(call["function"]["arguments"]) == {"timezone": "Asia/Tokyo"}
    [tool_message] = [m for m in second.body["messages"] if m["role"] == "tool"]
    assert tool_message["tool_call_id"] == call["id"]
    result = json.loads(message_text(tool_message))
    assert_real_tokyo_time(result, second.at)
    assert second.body.get("tools"), "the follow-up request still declares the tools"

    expected = f"It is {result['spoken_time']} in Tokyo."
    assert expected.lower() in " ".join(answer.split()).lower(), (answer, expected)

    # The turn record holds both completions' usage and the call with its real result.
    usage = turn["usage"]
    assert usage["llm_prompt_tokens"] == first.usage["prompt_tokens"] + second.usage["prompt_tokens"]
    assert usage["llm_completion_tokens"] == (first.usage["completion_tokens"] + second.usage["completion_tokens"])
    recorded = turn["tool_calls"]
    assert recorded and all(
        entry["id"] == call["id"]
        and entry["name"] == "get_current_time"
        and entry["arguments"] == {"timezone": "Asia/Tokyo"}
        and entry["result"] == result
        for entry in recorded
    ), recorded
    # LLMService.broadcast_frame pushes a FunctionCallInProgressFrame each way; the turn
    # recorder (bot/observers/turn_recorder.py) records the call once, by its id.
    assert len(recorded) == 1, recorded


async def test_turn_metrics_name_the_provider_and_carry_usage(script, native_ws):
    fake = script
    async with VoiceClient(native_ws) as client:
        await client.ready()
        speech_end = await client.say(speech_pcm(FRANCE))
        turn = await turn_metrics(client, speech_end)
    [request] = fake.completions()
    sent = request.usage

    assert turn["status"] == "completed", turn
    assert "paris" in turn["bot_text"].lower()
    assert turn["providers"]["llm"] == f"openai-compatible:{MODEL}"
    assert turn["providers"]["stt"].startswith("embedded:") and turn["providers"]["tts"].startswith("embedded:")
    usage = turn["usage"]
    assert usage["llm_prompt_tokens"] == sent["prompt_tokens"]
    assert usage["llm_completion_tokens"] == sent["completion_tokens"]
    assert usage["llm_cached_tokens"] == sent["prompt_tokens_details"]["cached_tokens"]
    # The embedded engines spend CPU; the LLM is remote, so it has none.
    assert set(usage["cpu_seconds"]) == {"stt", "tts"}
    # A self-hosted OpenAI-compatible server is not billed at OpenAI's prices.
    assert turn["cost"]["total"] == 0.0
    assert turn["latency"]["milestones"]["llm_first_token"] >= 0


# --- routed tool mode (JSON-schema replies from an OpenAI-compatible server) --------------------


async def test_routed_mode_answers_and_calls_tools(script, routed_ws):
    fake = script
    async with VoiceClient(routed_ws) as client:
        await client.ready()
        _, answer, stopped = await answer_to(client, FRANCE)
        assert "paris" in answer.lower(), answer
        [plain] = fake.completions()

        speech_end, answer, _ = await answer_to(client, TOKYO)
        started = await client.wait_for(lambda m: m.type == "llm-function-call-started", 1, after=speech_end)
    assert started.data.get("function_name") == "get_current_time", started.data

    body = plain.body
    assert "tools" not in body and "tool_choice" not in body
    assert body["model"] == MODEL and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["response_format"]["type"] == "json_schema"
    # A question naming no tool's subject (no numbers, no clock, no live figure, no
    # assessment) is offered no tool, while the prompt still describes every one of them.
    offered = body["response_format"]["json_schema"]["schema"]["anyOf"]
    assert [b["properties"]["tool"]["const"] for b in offered] == ["none"]
    for tool in ALL_TOOLS:
        assert f'"tool": "{tool.__name__}"' in body["messages"][0]["content"]
    assert body["messages"][0]["role"] == "system"
    assert body["messages"][0]["content"].startswith(SYSTEM_PROMPT)
    assert "capital of france" in last_user_text(body).lower()

    _, call, answered = fake.completions()
    assert [call.rule, answered.rule] == ["call get_current_time", "answer from the tool result"]
    schema = call.body["response_format"]["json_schema"]["schema"]
    branches = {b["properties"]["tool"]["const"]: b for b in schema["anyOf"]}
    assert set(branches) == {"none", "get_current_time"}
    timezone = branches["get_current_time"]["properties"]["arguments"]["properties"]["timezone"]
    assert "Asia/Tokyo" in timezone["enum"] and "Asia/Tokio" not in timezone["enum"]
    arguments = branches["get_current_time"]["properties"]["arguments"]
    assert arguments["required"] == ["timezone"] and arguments["properties"]["timezone"]["type"] == "string"
    # The earlier answer is replayed in the JSON form the model was asked for.
    earlier = json.dumps({"tool": "none", "answer": "The capital of France is Paris."})
    assert {"role": "assistant", "content": earlier} in call.body["messages"]
    # After the tool round only the plain answer is allowed, and the call is in the history.
    after_tool = answered.body["response_format"]["json_schema"]["schema"]["anyOf"]
    assert [b["properties"]["tool"]["const"] for b in after_tool] == ["none"]
    made = json.dumps({"tool": "get_current_time", "arguments": {"timezone": "Asia/Tokyo"}})
    assert {"role": "assistant", "content": made} in answered.body["messages"]
    result = tool_result(answered.body)
    assert_real_tokyo_time(result, answered.at)
    expected = f"It is {result['spoken_time']} in Tokyo."
    assert expected.lower() in " ".join(answer.split()).lower(), (answer, expected)
    assert "{" not in answer and "tool" not in answer.lower()
