"""Contract test of the ElevenLabs TTS stage: the real server, Pipecat's own
ElevenLabsTTSService, and a fake of ElevenLabs' multi-context WebSocket on loopback
(tests/fakes) that speaks with the project's Piper voice.

The mixed stack (embedded STT and LLM, ElevenLabs TTS) is driven with real speech over `/ws`.
"""

import asyncio

import pytest
from fakes.elevenlabs_server import FakeElevenLabs
from helpers import TURN_TIMEOUT, until

from client.server_process import start_server, stop_server
from client.speech import speech_pcm
from client.ws import VoiceClient

pytestmark = pytest.mark.e2e

QUESTION = "What is the capital of France?"
GREETING = "Hi! Ask me anything."


@pytest.fixture
def fake_elevenlabs():
    with FakeElevenLabs(api_key="test-key") as fake:
        yield fake


async def test_elevenlabs_tts_in_the_real_server(fake_elevenlabs, tmp_path):
    speech = speech_pcm(QUESTION)  # synthesize before the clock matters (and load Piper)
    process, http_url = await asyncio.to_thread(
        start_server,
        tmp_path / "server.log",
        ELEVENLABS_API_KEY="test-key",
        AGENT_TTS_PROVIDER="elevenlabs",
        AGENT_ELEVENLABS_URL=fake_elevenlabs.url,
        AGENT_ELEVENLABS_VOICE_ID="voice-123",
        AGENT_ELEVENLABS_MODEL="eleven_flash_v2_5",
        AGENT_STT_PROVIDER="embedded",
        AGENT_LLM_PROVIDER="embedded",
        AGENT_GREETING=GREETING,
    )
    try:
        client = VoiceClient(http_url.replace("http://", "ws://") + "/ws")
        async with client:
            await client.ready()
            greeted = await client.wait_for(lambda m: m.type == "bot-stopped-speaking", TURN_TIMEOUT)
            assert len(fake_elevenlabs.connections) == 1, fake_elevenlabs.rejected
            connection = fake_elevenlabs.connections[0]

            # The documented request: path with the voice id, model and PCM format, API key.
            assert connection.path == "/v1/text-to-speech/voice-123/multi-stream-input"
            assert connection.voice_id == "voice-123"
            assert connection.query["model_id"] == "eleven_flash_v2_5", connection.query
            assert connection.query["output_format"] == "pcm_24000", connection.query
            assert connection.headers.get("xi-api-key") == "test-key"

            # The greeting was spoken through it: a context initialised with " ", its text,
            # flushed and closed, and the audio reached the client.
            greeting = [c for c in connection.contexts.values() if "Ask me anything" in c.text]
            assert len(greeting) == 1, [c.text for c in connection.contexts.values()]
            assert greeting[0].init["text"] == " " and greeting[0].audio_seconds > 0.5
            assert greeting[0].final_sent
            assert client.voiced_audio_seconds(0, greeted.at) >= 0.5

            speech_end = await client.say(speech)
            stopped = await client.wait_for(lambda m: m.type == "bot-stopped-speaking", TURN_TIMEOUT, after=speech_end)
            answer = client.bot_text(speech_end, stopped.at)

            # The answer went to the fake as text of one context, flushed, then closed.
            answers = [c for c in connection.contexts.values() if "paris" in c.text.lower()]
            assert len(answers) == 1, [c.text for c in connection.contexts.values()]
            context = answers[0]
            assert context.flushed >= 1 and context.closed and context.final_sent
            texts = [m for m in connection.messages if m.get("context_id") == context.context_id]
            assert texts[0]["text"] == " ", texts[0]
            # The client heard the fake's audio, at 24 kHz, and its words (from the
            # alignment the fake sent) came back as the bot's text.
            assert client.voiced_audio_seconds(speech_end, stopped.at) >= 0.5
            assert all(a.sample_rate == 24000 for a in client.audio)
            assert "paris" in answer.lower(), answer

        # Leaving ends the session: Pipecat asks the fake to close the socket.
        assert await until(lambda: connection.closed_at is not None, 10)
        assert any(m.get("close_socket") for m in connection.messages), connection.messages[-3:]
    finally:
        await asyncio.to_thread(stop_server, process)
