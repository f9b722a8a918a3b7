"""End to end over `/ws`: real server, real protobuf client, real speech, real models."""

import asyncio
import json
import urllib.request

import pytest
from helpers import TURN_TIMEOUT, answer_to, connected

from client.speech import speech_pcm
from client.ws import VoiceClient

pytestmark = pytest.mark.e2e


async def test_spoken_question_gets_spoken_answer_and_follow_up_remembers(ws_url):
    speech_pcm("What is the capital of France?")  # synthesize before the clock matters
    speech_pcm("And what language do they speak there?")
    client = await connected(ws_url)
    try:
        speech_end, answer, _ = await answer_to(client, "What is the capital of France?")
        transcript = client.final_transcripts()[-1].lower()
        assert "capital" in transcript and "france" in transcript, transcript
        assert "paris" in answer.lower(), answer
        assert client.voiced_audio_seconds(speech_end) >= 0.5
        assert all(a.sample_rate == 24000 for a in client.audio)

        _, follow_up, _ = await answer_to(client, "And what language do they speak there?")
        assert "french" in follow_up.lower(), follow_up
    finally:
        await client.__aexit__(None, None, None)


async def test_tool_call_answers_with_live_data(ws_url):
    speech_pcm("What time is it in Tokyo?")
    client = await connected(ws_url)
    try:
        speech_end, answer, _ = await answer_to(client, "What time is it in Tokyo?")
        call = await client.wait_for(lambda m: m.type == "llm-function-call-started", 1, after=speech_end)
        assert call.data.get("function_name") == "get_current_time"
        assert answer.strip(), "the bot said nothing after the tool result"
        assert "{" not in answer and "tool" not in answer.lower()
    finally:
        await client.__aexit__(None, None, None)


async def test_barge_in_stops_bot_audio(ws_url):
    question = speech_pcm("Tell me a long story about a brave little dragon.")
    interruption = speech_pcm("Wait, stop please.")
    client = await connected(ws_url)
    try:
        speech_end = await client.say(question)
        started = await client.wait_for(lambda m: m.type == "bot-started-speaking", TURN_TIMEOUT, after=speech_end)
        await asyncio.sleep(0.8)
        barge_in = asyncio.ensure_future(client.say(interruption))
        user_started = await client.wait_for(lambda m: m.type == "user-started-speaking", 5, after=started.at)
        stopped = await client.wait_for(lambda m: m.type == "bot-stopped-speaking", 5, after=started.at)
        assert stopped.at - user_started.at < 1.0, "bot kept talking over the user"
        assert any(m.type == "bot-interrupted" for m in client.messages if m.at >= started.at)
        await barge_in
    finally:
        await client.__aexit__(None, None, None)


async def test_concurrent_sessions_share_the_models_without_mixing(ws_url, live_server):
    questions = {"What is the capital of France?": "paris", "Who wrote Romeo and Juliet?": "shakespeare"}
    for question in questions:
        speech_pcm(question)
    clients = [await connected(ws_url) for _ in questions]
    try:
        with urllib.request.urlopen(f"{live_server}/health", timeout=5) as response:
            assert json.loads(response.read())["active_sessions"] >= len(clients)
        answers = await asyncio.gather(*(answer_to(client, question) for client, question in zip(clients, questions)))
        for (question, expected), (_, answer, _) in zip(questions.items(), answers):
            assert expected in answer.lower(), (question, answer)
        # Each session's context holds only its own conversation.
        assert "shakespeare" not in answers[0][1].lower() and "paris" not in answers[1][1].lower()
    finally:
        for client in clients:
            await client.__aexit__(None, None, None)


async def test_sessions_are_released_when_clients_leave(ws_url, live_server):
    def active() -> int:
        with urllib.request.urlopen(f"{live_server}/health", timeout=5) as response:
            return json.loads(response.read())["active_sessions"]

    async with VoiceClient(ws_url) as client:
        await client.ready()
        assert active() >= 1
    for _ in range(100):  # bounded: 10 s
        if active() == 0:
            break
        await asyncio.sleep(0.1)
    assert active() == 0
