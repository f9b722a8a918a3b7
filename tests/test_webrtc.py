"""A SmallWebRTC round trip on loopback: offer/answer, speech in, RTVI and audio out."""

import asyncio

from client.speech import speech_pcm
from client.webrtc import WebRTCPeer, loopback_only_ice


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
        spoken = " ".join(
            m["data"].get("text", "") for m in peer.messages if m.get("type") == "bot-tts-text"
        )
        assert "france" in transcript["data"]["text"].lower()
        assert "paris" in spoken.lower(), spoken
        await asyncio.sleep(0.2)
        assert peer.bot_audio_rate == 48000
        assert peer.bot_audio_samples / 48000 > 1.0
