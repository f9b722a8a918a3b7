"""A SmallWebRTC round trip on loopback: offer/answer, speech in, RTVI and audio out."""

import asyncio
import json

import pytest

from client.speech import speech_pcm
from client.webrtc import WebRTCPeer, loopback_only_ice

pytestmark = pytest.mark.e2e


async def test_webrtc_round_trip(live_server):
    loopback_only_ice()
    question = speech_pcm("What is the capital of France?")
    async with WebRTCPeer(live_server) as peer:
        assert peer.pc_id
        await peer.wait_for("bot-ready", 20)
        await peer.wait_for("bot-stopped-speaking", 30)  # the greeting
        peer.messages.clear()
        peer.microphone.speak(question)
        transcript = await peer.wait_for("user-transcription", 30, where=lambda d: d.get("final"))
        await peer.wait_for("bot-stopped-speaking", 30)
        spoken = " ".join(m["data"].get("text", "") for m in peer.messages if m.get("type") == "bot-tts-text")
        assert "france" in transcript["data"]["text"].lower()
        assert "paris" in spoken.lower(), spoken
        await asyncio.sleep(0.2)
        assert peer.bot_audio_rate == 48000
        assert peer.bot_audio_samples / 48000 > 1.0


# data channel message -> words the RTVI error must contain
BAD_DATA_CHANNEL_MESSAGES = {
    "[" * 5000 + "]" * 5000: "nests deeper than 16 levels",
    '{"label": "rtvi-ai", "type": "send-text", "data": {"n": ' + "9" * 5000 + "}}": "number of 5000",
    "{not json": "not valid json",
    '{"hello": "world"}': "rtvi envelope",
    json.dumps(
        {
            "label": "rtvi-ai",
            "type": "raw-audio",
            "data": {"base64Audio": "AAAA", "sampleRate": 16000, "numChannels": 2},
        }
    ): "'raw-audio' messages are not accepted",
    json.dumps({"label": "rtvi-ai", "type": "send-text", "data": {"content": "x" * 2001}}): "2000-character limit",
}


async def test_bad_data_channel_messages_get_an_error_and_the_session_keeps_working(live_server, live_server_log):
    loopback_only_ice()
    async with WebRTCPeer(live_server) as peer:
        await peer.wait_for("bot-ready", 20)
        for message, expected in BAD_DATA_CHANNEL_MESSAGES.items():
            peer.messages.clear()
            peer.send_raw(message)
            error = await peer.wait_for("error", 10)
            assert expected in error["data"]["error"].lower(), (expected, error)
            assert error["data"]["fatal"] is False
        # Still the same working session: it answers speech.
        peer.messages.clear()
        peer.microphone.speak(speech_pcm("What is the capital of France?"))
        await peer.wait_for("user-transcription", 30, where=lambda d: d.get("final"))
    # No bad message reached Pipecat's parser, which logs each in full at ERROR.
    assert "Error parsing JSON message" not in live_server_log.read_text(errors="replace")
