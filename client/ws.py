"""A voice client for `/ws`, speaking the protocol of Pipecat's official websocket transport.

Every message is a binary protobuf `pipecat.Frame`: `audio` (16 kHz s16 mono from the client,
24 kHz from the bot) or `message` (an RTVI JSON envelope). Like a real microphone, the client
sends audio continuously at real-time pace, silence when nobody speaks, because the server's
VAD and turn timers run on wall-clock time.
"""

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import websockets
from pipecat.frames.protobufs import frames_pb2

from client.speech import rms

MIC_RATE = 16000
CHUNK_SECONDS = 0.02
CHUNK_BYTES = int(MIC_RATE * CHUNK_SECONDS) * 2
SILENCE_RMS = 200.0  # below this a bot audio chunk counts as silence


@dataclass
class Received:
    at: float
    message: dict[str, Any]

    @property
    def type(self) -> str:
        return self.message.get("type", "")

    @property
    def data(self) -> dict[str, Any]:
        return self.message.get("data") or {}


@dataclass
class BotAudio:
    at: float
    pcm: bytes
    sample_rate: int


def session_token(base_url: str, api_key: str) -> str:
    """A one-use session token (`?token=` on /ws and /api/offer) from a server with a key."""
    request = urllib.request.Request(
        f"{base_url}/api/tokens", method="POST", headers={"Authorization": f"Bearer {api_key}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["token"]


def audio_frame(pcm: bytes, sample_rate: int = MIC_RATE) -> bytes:
    frame = frames_pb2.Frame()
    frame.audio.audio = pcm
    frame.audio.sample_rate = sample_rate
    frame.audio.num_channels = 1
    return frame.SerializeToString()


def rtvi_frame(type_: str, data: dict | None = None, id_: str = "1") -> bytes:
    frame = frames_pb2.Frame()
    frame.message.data = json.dumps({"label": "rtvi-ai", "type": type_, "id": id_, "data": data or {}})
    return frame.SerializeToString()


@dataclass
class VoiceClient:
    url: str
    messages: list[Received] = field(default_factory=list)
    audio: list[BotAudio] = field(default_factory=list)
    interruptions: list[float] = field(default_factory=list)
    closed_code: int | None = None
    closed_reason: str = ""
    origin: str | None = None  # the Origin header a browser would send; None sends none

    async def __aenter__(self) -> "VoiceClient":
        self._ws = await websockets.connect(self.url, max_size=None, origin=self.origin)
        self._speech = bytearray()
        self._speech_done: asyncio.Future | None = None
        self._changed = asyncio.Event()
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._microphone())]
        return self

    async def __aexit__(self, *exc) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._ws.close()

    async def send_raw(self, data: bytes | str) -> None:
        await self._ws.send(data)

    async def send_rtvi(self, type_: str, data: dict | None = None, id_: str = "1") -> None:
        await self._ws.send(rtvi_frame(type_, data, id_))

    async def ready(self, timeout: float = 30) -> Received:
        await self.send_rtvi("client-ready", {"version": "2.2.0", "about": {"library": "voice-agent-client"}})
        return await self.wait_for(lambda m: m.type == "bot-ready", timeout)

    async def say(self, pcm: bytes) -> float:
        """Speak `pcm` (16 kHz s16) into the microphone; returns when it has been sent, as the
        monotonic time the speech ended."""
        loop = asyncio.get_running_loop()
        self._speech_done = loop.create_future()
        self._speech += pcm
        return await self._speech_done

    async def wait_for(self, predicate: Callable[[Received], bool], timeout: float, *, after: float = 0.0) -> Received:
        """The first message (received at or after `after`) that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        while True:
            for received in self.messages:
                if received.at >= after and predicate(received):
                    return received
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed_code is not None:
                seen = [_summary(m) for m in self.messages if m.at >= after]
                raise TimeoutError(f"no matching message within {timeout}s; saw {seen}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    def first_voiced_audio_after(self, t: float) -> float | None:
        """When the first non-silent bot audio arrived after time `t`."""
        return next((a.at for a in self.audio if a.at >= t and rms(a.pcm) > SILENCE_RMS), None)

    def voiced_audio_seconds(self, start: float, end: float = float("inf")) -> float:
        return sum(
            len(a.pcm) / 2 / a.sample_rate for a in self.audio if start <= a.at <= end and rms(a.pcm) > SILENCE_RMS
        )

    def playback_stall_seconds(self, start: float, end: float = float("inf")) -> float:
        """How long a player that starts each chunk of bot audio as it arrives (no jitter
        buffer) would have gone silent mid-reply, for the audio received between two times:
        the time chunks arrived after the audio before them had finished playing."""
        chunks = [a for a in self.audio if start <= a.at <= end]
        stalled, plays_until = 0.0, None
        for chunk in chunks:
            if plays_until is not None and chunk.at > plays_until:
                stalled += chunk.at - plays_until
            plays_until = max(plays_until or chunk.at, chunk.at) + len(chunk.pcm) / 2 / chunk.sample_rate
        return stalled

    def final_transcripts(self) -> list[str]:
        return [m.data.get("text", "") for m in self.messages if m.type == "user-transcription" and m.data.get("final")]

    def bot_text(self, start: float = 0.0, end: float = float("inf")) -> str:
        """What the bot said (TTS text) between two times."""
        return " ".join(
            m.data.get("text", "") for m in self.messages if m.type == "bot-tts-text" and start <= m.at <= end
        )

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                now = time.monotonic()
                if isinstance(raw, str):
                    continue
                frame = frames_pb2.Frame.FromString(raw)
                kind = frame.WhichOneof("frame")
                if kind == "audio":
                    self.audio.append(BotAudio(now, frame.audio.audio, frame.audio.sample_rate or 24000))
                elif kind == "message":
                    self.messages.append(Received(now, json.loads(frame.message.data)))
                elif kind == "interruption":
                    self.interruptions.append(now)
                self._changed.set()
        except websockets.ConnectionClosed as closed:
            self.closed_code = closed.rcvd.code if closed.rcvd else 1006
            self.closed_reason = closed.rcvd.reason if closed.rcvd else ""
        finally:
            if self.closed_code is None:
                self.closed_code = 1000
            self._changed.set()

    async def _microphone(self) -> None:
        try:
            await self._stream_microphone()
        except websockets.ConnectionClosed:
            pass  # the server ended the session; the reader records how

    async def _stream_microphone(self) -> None:
        started = time.monotonic()
        sent = 0
        while True:
            if self._speech:
                chunk = bytes(self._speech[:CHUNK_BYTES]).ljust(CHUNK_BYTES, b"\0")
                del self._speech[:CHUNK_BYTES]
            else:
                chunk = bytes(CHUNK_BYTES)
            await self._ws.send(audio_frame(chunk))
            sent += 1
            if not self._speech and self._speech_done and not self._speech_done.done():
                self._speech_done.set_result(time.monotonic())
            delay = started + sent * CHUNK_SECONDS - time.monotonic()
            if delay < -0.1:
                # Fell behind (a busy event loop): a real microphone drops the gap rather
                # than sending a burst faster than real time, which would fool the VAD.
                started, sent = time.monotonic(), 0
            await asyncio.sleep(max(0.0, delay))


def _summary(m: Received) -> str:
    """A message's type, with what a failing wait needs to explain itself: the words heard
    and the tool called."""
    data = m.data if isinstance(m.data, dict) else {}
    if m.type in ("user-transcription", "user-llm-text") and data.get("text"):
        return f"{m.type}({data['text']!r})"
    if m.type.startswith("llm-function-call") and data.get("function_name"):
        return f"{m.type}({data['function_name']})"
    if m.type == "server-message" and data.get("type"):
        return f"server-message({data['type']})"
    return m.type
