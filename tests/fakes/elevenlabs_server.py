"""A stand-in for ElevenLabs' multi-context text-to-speech WebSocket, on loopback.

It implements the endpoint Pipecat's `ElevenLabsTTSService` (1.14) uses, as documented:

- API reference "Multi-Context WebSocket" (`GET /v1/text-to-speech/{voice_id}/multi-stream-input`,
  AsyncAPI spec: query `model_id`, `output_format`, `auto_mode`, `inactivity_timeout`, ...;
  header `xi-api-key`; client messages InitialiseContext / SendText / FlushContext /
  CloseContext / CloseSocket; server messages AudioOutputMulti / FinalOutputMulti):
  https://elevenlabs.io/docs/api-reference/text-to-speech/v-1-text-to-speech-voice-id-multi-stream-input
- Guide "Multi-Context WebSocket" (contexts, flush, close_context, close_socket, keep-alives):
  https://elevenlabs.io/docs/cookbooks/multi-context-web-socket

What it checks and records per connection: the path and its voice id, every query parameter,
the request headers (the API key comes in the `xi-api-key` header, or else in the first
message's `xi_api_key`; a wrong header key is refused with HTTP 401 at the handshake, a missing
one closes the socket with 1008), and every JSON message the client sent.

The audio is a real spoken waveform of the text it was sent: the project's Piper voice
(`client.speech.speech_pcm`) at the sample rate of the requested `pcm_<rate>` output format, so
it is non-silent and as long as the words take to say. The character alignment is spread evenly
over that audio; it is not the voice's real timing.

Failure modes, armed for the next context that gets text with `FakeElevenLabs.inject(kind)`:
`"error"` answers that text with an error message and closes the socket with code 1011 (an
internal error; the message's shape, `{"error", "message", "code"}`, is this fake's, not a
documented one); `"hang"` accepts the context's text and never answers it (no audio, no
`isFinal`) while the socket stays open; `"stall"` does the same for everything sent on that
socket from then on, every later context included (a stuck connection: only a new one is
answered again).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from client.speech import speech_pcm
from fakes.threaded_ws import ThreadedWebSocketFake

PATH = re.compile(r"^/v1/text-to-speech/(?P<voice_id>[^/]+)/multi-stream-input$")
CHUNK_CHARS = 24  # about how many characters of text each audio message carries
SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s*$")
DEFAULT_CHUNK_LENGTH_SCHEDULE = 120  # first entry of the documented [120, 160, 250, 290]


@dataclass
class Context:
    """One context_id: its text, in the order it arrived, and what was generated for it."""

    context_id: str
    init: dict[str, Any]  # the InitialiseContext message
    text: str = ""  # all text sent to it
    spoken: list[str] = field(default_factory=list)  # each generated piece of text
    audio_seconds: float = 0.0
    flushed: int = 0
    closed: bool = False
    final_sent: bool = False

    @property
    def voice_settings(self) -> dict[str, Any] | None:
        return self.init.get("voice_settings")


@dataclass
class Connection:
    path: str
    voice_id: str
    query: dict[str, str]
    headers: dict[str, str]
    opened_at: float
    messages: list[dict[str, Any]] = field(default_factory=list)  # every client message
    sent: list[dict[str, Any]] = field(default_factory=list)  # server messages (audio elided)
    contexts: dict[str, Context] = field(default_factory=dict)
    close_code: int | None = None
    closed_at: float | None = None

    @property
    def sample_rate(self) -> int:
        match = re.fullmatch(r"pcm_(\d+)", self.query.get("output_format", ""))
        return int(match.group(1)) if match else 0


class _Session:
    def __init__(self, server: FakeElevenLabs, ws: ServerConnection, record: Connection):
        self.server, self.ws, self.record = server, ws, record
        self.auto_mode = record.query.get("auto_mode", "false") == "true"
        self.authenticated = record.headers.get("xi-api-key") == server.api_key or (
            record.query.get("authorization") == server.api_key
        )
        self.buffers: dict[str, str] = {}  # text waiting to be generated, per context
        self.faulted: dict[str, str] = {}  # context -> the fault injected into it
        self.stalled = False  # a "stall" fault: nothing on this socket is answered any more

    async def send(self, message: dict[str, Any]) -> None:
        if self.stalled:
            return
        logged = dict(message)
        if "audio" in logged:
            logged["audio"] = f"<{len(base64.b64decode(message['audio']))} bytes>"
        self.record.sent.append(logged)
        await self.ws.send(json.dumps(message))

    async def on_message(self, message: dict[str, Any]) -> bool:
        """Handle one client message; returns False once the socket is to be closed."""
        if message.get("close_socket"):
            # CloseSocket: finish every open context, then close the connection.
            for context_id, context in self.record.contexts.items():
                if not context.closed:
                    await self._generate(context_id)
                    await self._close(context_id)
            return False

        context_id = message.get("context_id") or "default"
        if not self.authenticated:
            # InitializeConnectionMulti: `xi_api_key` "if not in header", first message only.
            if message.get("xi_api_key") != self.server.api_key:
                await self.ws.close(1008, "Invalid API key")
                return False
            self.authenticated = True

        if message.get("close_context"):
            # CloseContext: the context ends; FinalOutputMulti ("isFinal") is its last message.
            if self.faulted.get(context_id) == "hang" or self.stalled:
                return True  # a hung context does not even confirm its end
            if context_id in self.record.contexts:
                await self._generate(context_id)
                await self._close(context_id)
            return True

        text = message.get("text")
        if context_id not in self.record.contexts:
            if text is None:
                return True  # flush of an unknown context: nothing to do
            if text == "" and "context_id" not in message:
                return True  # a keep-alive without a context opens none
            # InitialiseContext: the first message of a context, normally text " " plus
            # voice_settings / generation_config.
            self.record.contexts[context_id] = Context(context_id, init=message)
            self.buffers[context_id] = ""
            if text == " ":
                text = ""  # the single space that opens a context is not text to speak
        context = self.record.contexts[context_id]
        if context.closed:
            return True  # text for a closed context is dropped
        if text and context_id not in self.faulted and self.server.faults:
            self.faulted[context_id] = self.server.faults.pop(0)
            if self.faulted[context_id] == "error":
                await self.send({"error": "internal_error", "message": "An internal error occurred.", "code": 1011})
                await self.ws.close(1011, "internal error")
                return False
        if self.faulted.get(context_id) == "stall":
            self.stalled = True
        if self.faulted.get(context_id) in ("hang", "stall") or self.stalled:
            context.text += text or ""
            return True  # taken, never spoken
        if text:
            # SendText: text is buffered and generated in chunks.
            context.text += text
            self.buffers[context_id] += text
        # `text: ""` is a keep-alive (guide: resets the inactivity timeout, generates nothing).
        buffered = self.buffers[context_id]
        if message.get("flush"):
            context.flushed += 1
            await self._generate(context_id)  # FlushContext: generate what is buffered now
        elif buffered.strip() and (
            (self.auto_mode and SENTENCE_END.search(buffered)) or len(buffered) >= DEFAULT_CHUNK_LENGTH_SCHEDULE
        ):
            # auto_mode generates at sentence ends; otherwise once chunk_length_schedule's
            # first threshold of characters has been buffered.
            await self._generate(context_id)
        return True

    async def _close(self, context_id: str) -> None:
        context = self.record.contexts[context_id]
        context.closed = True
        if not context.final_sent:
            context.final_sent = True
            await self.send({"isFinal": True, "contextId": context_id})  # FinalOutputMulti

    async def _generate(self, context_id: str) -> None:
        """Speak the buffered text: AudioOutputMulti messages with audio and alignment."""
        text, self.buffers[context_id] = self.buffers.get(context_id, ""), ""
        if not text.strip():
            return
        context = self.record.contexts[context_id]
        rate = self.record.sample_rate
        pcm = await asyncio.to_thread(speech_pcm, text.strip(), rate)
        context.spoken.append(text)
        context.audio_seconds += len(pcm) / 2 / rate
        # Characters spread evenly over the audio; each message carries a run of characters,
        # its audio, and their alignment in ms relative to that chunk (as the reference says).
        samples = len(pcm) // 2
        per_char = samples / len(text)
        for first in range(0, len(text), CHUNK_CHARS):
            chars = list(text[first : first + CHUNK_CHARS])
            start = round(first * per_char)
            end = samples if first + CHUNK_CHARS >= len(text) else round((first + len(chars)) * per_char)
            char_ms = per_char / rate * 1000
            alignment = {
                "chars": chars,
                "charStartTimesMs": [round(i * char_ms) for i in range(len(chars))],
                "charDurationsMs": [max(1, round(char_ms))] * len(chars),
            }
            await self.send(
                {
                    "audio": base64.b64encode(pcm[start * 2 : end * 2]).decode(),
                    "alignment": alignment,
                    "normalizedAlignment": alignment,
                    "contextId": context_id,
                }
            )


class FakeElevenLabs(ThreadedWebSocketFake):
    """The fake server, run on its own event loop in a background thread.

    Use as a context manager (or `start()` / `stop()`); `url` is the `ws://127.0.0.1:PORT`
    base URL that Pipecat's `ElevenLabsTTSService(url=...)` expects. `connections` lists every
    connection, in order.
    """

    name = "fake-elevenlabs"

    def __init__(self, *, api_key: str = "test-key"):
        super().__init__(api_key=api_key)
        self.faults: list[str] = []  # "error" / "hang", one per coming context

    def inject(self, kind: str) -> None:
        """Make the next context that gets text fail: `"error"`, `"hang"` or `"stall"`."""
        if kind not in ("error", "hang", "stall"):
            raise ValueError(kind)
        self.faults.append(kind)

    def _check_request(self, connection: ServerConnection, request):
        split = urlsplit(request.path)
        if not PATH.match(split.path):
            self.rejected.append((request.path, 404))
            return connection.respond(404, "Not Found\n")
        query = parse_qs(split.query)
        key = request.headers.get("xi-api-key")
        if key is not None and key != self.api_key:
            self.rejected.append((request.path, 401))
            return connection.respond(401, "Invalid API key\n")
        if not re.fullmatch(r"pcm_\d+", query.get("output_format", ["mp3_44100_128"])[-1]):
            # The fake speaks raw PCM only (what Pipecat asks for); say so rather than lie.
            self.rejected.append((request.path, 400))
            return connection.respond(400, "fake supports pcm_<rate> output formats only\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        split = urlsplit(ws.request.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        record = Connection(
            path=split.path,
            voice_id=PATH.match(split.path).group("voice_id"),
            query=query,
            headers=dict(ws.request.headers.raw_items()),
            opened_at=time.monotonic(),
        )
        self.connections.append(record)
        session = _Session(self, ws, record)
        # Reference: `inactivity_timeout` (default 20 s) closes a socket that receives nothing.
        inactivity = float(query.get("inactivity_timeout", 20))
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(ws.recv(), inactivity)
                except TimeoutError:
                    await ws.close(1008, "Have not received a new text input within the timeout")
                    break
                try:
                    message = json.loads(raw)
                except (json.JSONDecodeError, TypeError):
                    await ws.close(1007, "Invalid JSON")
                    break
                record.messages.append(message)
                if not await session.on_message(message):
                    await ws.close(1000, "")
                    break
        except ConnectionClosed:
            pass
        finally:
            record.close_code = ws.close_code
            record.closed_at = time.monotonic()
