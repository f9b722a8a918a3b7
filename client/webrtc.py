"""A headless SmallWebRTC peer for `/api/offer`, as Pipecat's small-webrtc client does it.

Signalling is one HTTP exchange (`POST /api/offer` with the SDP offer, the answer back);
audio flows both ways as Opus on the first transceiver and RTVI messages travel as JSON on a
data channel, with `ping` keep-alives the server uses to notice a vanished peer.
"""

import asyncio
import fractions
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import soxr
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame

RATE = 48000
FRAME_SAMPLES = RATE // 50  # 20 ms


def loopback_only_ice() -> None:
    """Make aioice offer only 127.0.0.1 (it leaves loopback out by default); for tests."""
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


class Microphone(MediaStreamTrack):
    """Plays queued 48 kHz s16 PCM in real time, silence otherwise."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pending = bytearray()
        self._pts = 0
        self._started: float | None = None

    def speak(self, pcm_16k: bytes) -> None:
        samples = np.frombuffer(pcm_16k, dtype=np.int16)
        self._pending += soxr.resample(samples, 16000, RATE).astype(np.int16).tobytes()

    async def recv(self) -> AudioFrame:
        if self._started is None:
            self._started = time.monotonic()
        delay = self._started + self._pts / RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        size = FRAME_SAMPLES * 2
        chunk = bytes(self._pending[:size]).ljust(size, b"\0")
        del self._pending[:size]
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(chunk)
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME_SAMPLES
        return frame


@dataclass
class WebRTCPeer:
    base_url: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    bot_audio_samples: int = 0
    bot_audio_rate: int | None = None
    pc_id: str | None = None
    token: str | None = None  # from POST /api/tokens, when the server has an API key

    async def __aenter__(self) -> "WebRTCPeer":
        self._pc = RTCPeerConnection()
        self.microphone = Microphone()
        self._pc.addTrack(self.microphone)
        self._channel = self._pc.createDataChannel("rtvi")
        self._tasks: list[asyncio.Task] = []
        self._changed = asyncio.Event()
        self._pc.on("track", self._on_track)
        self._channel.on("open", self._on_open)
        self._channel.on("message", self._on_message)
        await self._pc.setLocalDescription(await self._pc.createOffer())  # gathers ICE
        async with aiohttp.ClientSession() as http:
            offer = {"sdp": self._pc.localDescription.sdp, "type": self._pc.localDescription.type}
            params = {"token": self.token} if self.token else None
            async with http.post(f"{self.base_url}/api/offer", json=offer, params=params) as response:
                response.raise_for_status()
                answer = await response.json()
        self.pc_id = answer.get("pc_id")
        await self._pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        return self

    async def __aexit__(self, *exc) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._pc.close()

    async def wait_for(
        self, message_type: str, timeout: float, where: Callable[[dict], bool] = lambda _: True
    ) -> dict[str, Any]:
        """The first RTVI message of this type whose data satisfies `where`."""
        deadline = time.monotonic() + timeout
        while True:
            found = next(
                (m for m in self.messages if m.get("type") == message_type and where(m.get("data") or {})),
                None,
            )
            if found:
                return found
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no {message_type} within {timeout}s; saw {[m.get('type') for m in self.messages]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), deadline - time.monotonic())
            except TimeoutError:
                pass

    def send_raw(self, message: str) -> None:
        """Send a data channel message as it is (for tests of bad input)."""
        self._channel.send(message)

    def _on_track(self, track: MediaStreamTrack) -> None:
        async def drain() -> None:
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                self.bot_audio_samples += frame.samples
                self.bot_audio_rate = frame.sample_rate

        self._tasks.append(asyncio.create_task(drain()))

    def _on_open(self) -> None:
        self._channel.send(
            json.dumps(
                {
                    "label": "rtvi-ai",
                    "type": "client-ready",
                    "id": "1",
                    "data": {"version": "2.2.0", "about": {"library": "voice-agent-webrtc-client"}},
                }
            )
        )

        async def keep_alive() -> None:
            while True:
                self._channel.send(f"ping: {time.time()}")
                await asyncio.sleep(1)

        self._tasks.append(asyncio.create_task(keep_alive()))

    def _on_message(self, raw: str) -> None:
        try:
            self.messages.append(json.loads(raw))
        except json.JSONDecodeError:
            return
        self._changed.set()
