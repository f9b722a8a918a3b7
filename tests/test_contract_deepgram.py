"""Contract test of the Deepgram STT stage: the real server, Pipecat's own DeepgramSTTService,
and a scripted fake of Deepgram's live `/v1/listen` WebSocket on loopback (tests/fakes).

The mixed stack (Deepgram STT, embedded LLM and TTS) is driven with real speech over `/ws`.
"""

import asyncio

import pytest
from fakes.deepgram_server import LISTEN_PATH, FakeDeepgram
from helpers import TURN_TIMEOUT, until

from client.server_process import start_server, stop_server
from client.speech import speech_pcm
from client.ws import VoiceClient

QUESTION = "What is the capital of France?"


def _transcript(results: dict) -> str:
    return results["channel"]["alternatives"][0]["transcript"]


@pytest.fixture
def fake_deepgram():
    with FakeDeepgram(api_key="test-key") as fake:
        yield fake


@pytest.mark.model
async def test_fake_speaks_the_documented_protocol_to_the_deepgram_sdk(fake_deepgram):
    """The fake's messages parse as the SDK's own types (no server involved, ~1 s)."""
    from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
    from deepgram.listen.v1.types import ListenV1Metadata, ListenV1Results

    url = fake_deepgram.url
    client = AsyncDeepgramClient(
        api_key="test-key",
        environment=DeepgramClientEnvironment(
            base=url.replace("ws", "http", 1), production=url, agent=url, agent_rest=url
        ),
    )
    speech = speech_pcm(QUESTION) + bytes(int(16000 * 0.7) * 2)  # then 0.7 s of silence
    received = []
    async with client.listen.v1.connect(
        model="nova-3-general", encoding="linear16", sample_rate="16000", interim_results="true"
    ) as connection:
        for i in range(0, len(speech), 640):
            await connection.send_media(speech[i : i + 640])
        await connection.send_close_stream()
        async for message in connection:
            received.append(message)

    results = [m for m in received if isinstance(m, ListenV1Results)]
    interims = [r.channel.alternatives[0].transcript for r in results if not r.is_final]
    finals = [r for r in results if r.is_final]
    assert interims == ["what is the", "what is the capital of"], interims
    assert [f.channel.alternatives[0].transcript for f in finals] == [QUESTION]
    assert finals[0].speech_final is True and not finals[0].from_finalize  # endpointing
    assert isinstance(received[-1], ListenV1Metadata) and received[-1].duration > 2


@pytest.mark.e2e
async def test_deepgram_stt_in_the_real_server(fake_deepgram, tmp_path):
    speech = speech_pcm(QUESTION)  # synthesize before the clock matters
    process, http_url = await asyncio.to_thread(
        start_server,
        tmp_path / "server.log",
        DEEPGRAM_API_KEY="test-key",
        AGENT_STT_PROVIDER="deepgram",
        AGENT_DEEPGRAM_URL=fake_deepgram.url,
        AGENT_LLM_PROVIDER="embedded",
        AGENT_TTS_PROVIDER="embedded",
    )
    try:
        client = VoiceClient(http_url.replace("http://", "ws://") + "/ws")
        async with client:
            await client.ready()
            await client.wait_for(lambda m: m.type == "bot-stopped-speaking", TURN_TIMEOUT)
            assert len(fake_deepgram.connections) == 1, fake_deepgram.rejected
            connection = fake_deepgram.connections[0]

            speech_end = await client.say(speech)
            final = await client.wait_for(lambda m: m.type == "user-transcription" and m.data.get("final"), 10)
            stopped = await client.wait_for(lambda m: m.type == "bot-stopped-speaking", TURN_TIMEOUT, after=speech_end)
            answer = client.bot_text(speech_end, stopped.at)

            # The documented request: path, query parameters and the Token authorization.
            assert connection.path == LISTEN_PATH
            query = connection.query
            assert query["encoding"] == "linear16" and query["sample_rate"] == "16000", query
            assert query["channels"] == "1" and query["interim_results"] == "true", query
            assert query["model"] == "nova-3-general" and query["language"] == "en", query
            assert connection.headers.get("Authorization") == "Token test-key"
            # It got the spoken audio as 16 kHz linear16 (about as much voice as was spoken).
            assert connection.voiced_seconds >= 1.0, connection.voiced_seconds
            assert connection.audio_seconds >= len(speech) / 2 / 16000

            # Interim transcriptions reached the client before the final one.
            transcriptions = [m for m in client.messages if m.type == "user-transcription"]
            interims = [m for m in transcriptions if not m.data.get("final")]
            assert [m.data["text"] for m in interims] == ["what is the", "what is the capital of"]
            assert all(m.at < final.at for m in interims)
            assert final.data["text"] == QUESTION
            # Pipecat asked for it with Finalize when its VAD heard the speech stop (0.2 s),
            # before the fake's own 0.5 s endpointing, so the final is flagged from_finalize.
            assert "Finalize" in connection.control_types()
            finals = [r for r in connection.results(final=True) if _transcript(r)]
            assert [_transcript(r) for r in finals] == [QUESTION]
            assert finals[0]["from_finalize"] is True

            # The embedded LLM and TTS answered it out loud.
            assert "paris" in answer.lower(), answer
            assert client.voiced_audio_seconds(speech_end) >= 0.5

        # Leaving ends the session: Pipecat closes the stream, the fake sums it up and closes.
        assert await until(lambda: "CloseStream" in connection.control_types(), 10), connection.control
        # The fake records CloseStream before it answers (it may finish buffered audio first).
        assert await until(lambda: connection.sent[-1]["type"] == "Metadata", 5), connection.sent[-3:]
        assert await until(lambda: connection.closed_at is not None, 5)
    finally:
        await asyncio.to_thread(stop_server, process)
