"""Tools that do real work, over `/ws` with spoken requests, and the pictures they produce
arriving in step with the voice."""

import asyncio
import json
import urllib.request

import pytest
from helpers import TOOL_TURN_TIMEOUT, connected, is_turn_metrics

from bot.processors.visualization import WITHDRAWN_MESSAGE_TYPE
from client.speech import dictation_pcm, speech_pcm
from client.ws import Received, VoiceClient

pytestmark = pytest.mark.e2e

# Spoken without the pauses a list's commas get: a pause with falling pitch ends a turn.
CHART_REQUEST = "Show me a bar chart of monthly sales with January at 10 February at 20 and March at 30"


def _is_viz(m: Received) -> bool:
    return m.type == "server-message" and m.data.get("type") == "visualization"


def _is_call(name: str):
    return lambda m: m.type == "llm-function-call-started" and m.data.get("function_name") == name


async def _turn(client: VoiceClient, text: str) -> tuple[float, Received]:
    """Speak; return (end of speech, the turn's turn-metrics message)."""
    speech_end = await client.say(speech_pcm(text))
    metrics = await client.wait_for(is_turn_metrics, TOOL_TURN_TIMEOUT, after=speech_end)
    return speech_end, metrics


async def test_spoken_chart_request_draws_the_chart_with_its_sentence(ws_url, live_server):
    speech_pcm(CHART_REQUEST)
    client = await connected(ws_url, TOOL_TURN_TIMEOUT)
    try:
        speech_end, metrics = await _turn(client, CHART_REQUEST)
        call = await client.wait_for(_is_call("generate_chart"), 1, after=speech_end)
        arguments = metrics.data["turn"]["tool_calls"][0]["arguments"]
        assert [float(v) for v in arguments.get("values", [])] == [10.0, 20.0, 30.0], arguments
        viz = await client.wait_for(_is_viz, 1, after=speech_end)
        stopped = await client.wait_for(lambda m: m.type == "bot-stopped-speaking", 1, after=speech_end)
        # In step with the voice: after the audio before its sentence (nothing voiced came
        # between the tool result and it), before the first audio that presents it, and
        # before the turn's bot-stopped-speaking.
        first_audio_after = client.first_voiced_audio_after(viz.at)
        assert first_audio_after is not None and viz.at <= first_audio_after <= stopped.at
        assert client.voiced_audio_seconds(call.at, viz.at) == 0
        visualization = viz.data["visualization"]
        assert visualization["type"] == "chart"
        figure = visualization["figure"]
        assert [float(v) for v in figure["data"][0]["y"]] == [10.0, 20.0, 30.0]
        turn = metrics.data["turn"]
        assert viz.data["turn_id"] == turn["turn_id"]
        assert [c["name"] for c in turn["tool_calls"]] == ["generate_chart"]
        assert metrics.data["turn"]["bot_text"], "the chart was not presented out loud"
        # Kept in the session, newest first, with its turn id.
        session_id = turn["session_id"]
    finally:
        await client.__aexit__(None, None, None)
    with urllib.request.urlopen(f"{live_server}/api/sessions/{session_id}/visualizations") as r:
        kept = json.loads(r.read())["visualizations"]
    assert kept and kept[0]["turn_id"] == turn["turn_id"]


async def test_sentiment_and_live_data_requests(ws_url):
    sentiment = "Is this sentence positive or negative: I absolutely love my new job."
    live = "What's your current response latency?"
    speech_pcm(sentiment), speech_pcm(live)
    client = await connected(ws_url, TOOL_TURN_TIMEOUT)
    try:
        speech_end, metrics = await _turn(client, sentiment)
        await client.wait_for(_is_call("analyze_sentiment"), 1, after=speech_end)
        viz = await client.wait_for(_is_viz, 1, after=speech_end)
        assert viz.data["visualization"]["type"] == "sentiment"
        assert "positive" in metrics.data["turn"]["bot_text"].lower()

        speech_end, metrics = await _turn(client, live)
        await client.wait_for(_is_call("get_realtime_data"), 1, after=speech_end)
        viz = await client.wait_for(_is_viz, 1, after=speech_end)
        assert viz.data["visualization"]["type"] == "live-data"
        assert metrics.data["turn"]["bot_text"]
    finally:
        await client.__aexit__(None, None, None)


async def test_two_tools_in_one_turn_run_together(ws_url):
    request = "What time is it in Tokyo and in London"
    speech_pcm(request)
    client = await connected(ws_url, TOOL_TURN_TIMEOUT)
    try:
        speech_end, metrics = await _turn(client, request)
        calls = metrics.data["turn"]["tool_calls"]
        assert [c["name"] for c in calls] == ["get_current_time", "get_current_time"], calls
        assert {c["arguments"]["timezone"] for c in calls} == {"Asia/Tokyo", "Europe/London"}
        assert metrics.data["turn"]["bot_text"]
    finally:
        await client.__aexit__(None, None, None)


async def test_interrupting_a_tool_turn_leaves_nothing_stuck(ws_url):
    request = CHART_REQUEST
    follow_up = "Stop. What is the capital of France?"
    speech_pcm(request), speech_pcm(follow_up)
    client = await connected(ws_url, TOOL_TURN_TIMEOUT)
    try:
        speech_end = await client.say(speech_pcm(request))
        # Any tool: which one a recognised sentence routes to is the chart test's subject.
        await client.wait_for(lambda m: m.type == "llm-function-call-started", TOOL_TURN_TIMEOUT, after=speech_end)
        # Barge in once the tool's answer has been heard: speech that began before then goes
        # on with the request instead (the dictated-chart test below).
        await client.wait_for(lambda m: m.type == "bot-started-speaking", TOOL_TURN_TIMEOUT, after=speech_end)
        await asyncio.sleep(0.5)
        _, metrics = await _turn(client, follow_up)
        assert "paris" in metrics.data["turn"]["bot_text"].lower(), metrics.data["turn"]
        statuses = [
            m.data["turn"]["status"]
            for m in client.messages
            if m.type == "server-message" and m.data.get("type") == "turn-metrics"
        ]
        assert statuses == ["interrupted", "completed"], statuses
    finally:
        await client.__aexit__(None, None, None)


def _pictures_left(client: VoiceClient, after: float) -> list[Received]:
    """The pictures shown and not withdrawn: a reply whose audio began as the user went on may
    have shown one before the VAD heard the user's voice, and it is taken down."""
    messages = [m for m in client.messages if m.at >= after and m.type == "server-message"]
    withdrawn = {i for m in messages if m.data.get("type") == WITHDRAWN_MESSAGE_TYPE for i in m.data["tool_call_ids"]}
    return [m for m in messages if _is_viz(m) and m.data["tool_call_id"] not in withdrawn]


def _records(client: VoiceClient, after: float) -> list[dict]:
    return [m.data["turn"] for m in client.messages if m.at >= after and is_turn_metrics(m)]


async def test_a_chart_request_dictated_with_pauses_is_one_turn_with_its_values(ws_url):
    """Pauses after "sales:" and between the values, as people dictate: one turn, answered
    once, with every word, and one chart of exactly the values said."""
    parts = ("Show me a bar chart of monthly sales:", "January 10,", "February 20,", "March 30")
    pcm = dictation_pcm(parts, (0.6,))
    client = await connected(ws_url, TOOL_TURN_TIMEOUT)
    try:
        started = await client.say(pcm) - len(pcm) / 32000
        await client.wait_for(lambda m: bool(_records(client, started)), TOOL_TURN_TIMEOUT, after=started)
        await asyncio.sleep(3)  # a part answered on its own would leave a second record
        (turn,) = _records(client, started)
        assert turn["status"] == "completed", turn
        assert [c["name"] for c in turn["tool_calls"]] == ["generate_chart"], turn
        (viz,) = _pictures_left(client, started)
        assert [float(v) for v in viz.data["visualization"]["figure"]["data"][0]["y"]] == [10.0, 20.0, 30.0]
        assert viz.data["turn_id"] == turn["turn_id"]
    finally:
        await client.__aexit__(None, None, None)
