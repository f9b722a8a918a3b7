"""A scripted stand-in for Deepgram's live (streaming) transcription WebSocket, on loopback.

It implements the wire contract of `wss://api.deepgram.com/v1/listen` as documented:

- API reference "Transcribe - Live audio" (`GET /v1/listen`, AsyncAPI spec):
  https://developers.deepgram.com/reference/speech-to-text/listen-streaming
- "Configure Endpointing and Interim Results" (`is_final` / `speech_final`):
  https://developers.deepgram.com/docs/understand-endpointing-interim-results
- "Utterance End" (the `UtteranceEnd` message): https://developers.deepgram.com/docs/utterance-end
- Control messages: "Audio Keep Alive" https://developers.deepgram.com/docs/audio-keep-alive,
  "Finalize" https://developers.deepgram.com/docs/finalize,
  "Close Stream" https://developers.deepgram.com/docs/close-stream

What it checks and records per connection: the path (`/v1/listen`), every query parameter
(model, encoding, sample_rate, channels, interim_results, ...), the request headers (the
`Authorization: Token <key>` header is required; a wrong or missing key is refused with HTTP
401 at the handshake, as Deepgram does), the binary audio, the JSON control messages and every
message it sent back.

It is honest about what it is: it does NOT recognise speech. It only measures the audio's
loudness (RMS of the linear16 frames, at the `sample_rate` of the query) to know when somebody
speaks and when they stopped, and answers each utterance from a script: interim results after
so much voiced audio, then the scripted final transcript once the speaker has been silent for
`endpoint_silence_secs` (endpointing: `speech_final: true`; the `endpointing` query parameter
overrides it when a client sends one, Pipecat does not) or when the client sends `Finalize`
(`from_finalize: true`), whichever comes first.

Failure modes, armed for the next utterance with `FakeDeepgram.inject(kind)`: `"error"` closes
the stream with code 1011 and reason `NET-0000` when that utterance's final is due (how
Deepgram reports an internal error, "Recovering from connection errors & timeouts":
https://developers.deepgram.com/docs/recovering-from-connection-errors-and-timeouts);
`"hang"` keeps the connection open but sends nothing more on it (no results, no Finalize
answer), as a stuck stream does: only a new connection is answered again.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from fakes.threaded_ws import ThreadedWebSocketFake

LISTEN_PATH = "/v1/listen"
FRAME_SECS = 0.02  # loudness is judged per 20 ms of audio
VOICED_RMS = 300.0  # a 20 ms frame louder than this counts as speech


@dataclass(frozen=True)
class Utterance:
    """What the fake 'hears' for one utterance: interim texts by voiced seconds, then a final."""

    final: str
    interims: tuple[tuple[float, str], ...] = ()


DEFAULT_SCRIPT = (
    Utterance(
        final="What is the capital of France?",
        interims=((0.5, "what is the"), (1.0, "what is the capital of")),
    ),
)


@dataclass
class Connection:
    """Everything one client connection sent and received."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    opened_at: float
    audio: bytearray = field(default_factory=bytearray)
    control: list[dict[str, Any]] = field(default_factory=list)  # JSON text messages received
    sent: list[dict[str, Any]] = field(default_factory=list)  # JSON messages sent back
    voiced_seconds: float = 0.0  # total audio louder than VOICED_RMS
    closed_at: float | None = None

    @property
    def sample_rate(self) -> int:
        return int(self.query.get("sample_rate", 16000))

    @property
    def channels(self) -> int:
        return int(self.query.get("channels", 1))

    @property
    def audio_seconds(self) -> float:
        return len(self.audio) / 2 / self.sample_rate / self.channels

    def results(self, *, final: bool | None = None) -> list[dict[str, Any]]:
        return [
            m for m in self.sent if m.get("type") == "Results" and (final is None or bool(m.get("is_final")) is final)
        ]

    def control_types(self) -> list[str]:
        return [m.get("type", "") for m in self.control]


class _Session:
    """The per-connection state machine: loudness in, scripted Results out."""

    def __init__(self, server: FakeDeepgram, ws: ServerConnection, record: Connection):
        self.server, self.ws, self.record = server, ws, record
        self.request_id = str(uuid.uuid4())
        self.interim_results = record.query.get("interim_results", "false") == "true"
        utterance_end_ms = record.query.get("utterance_end_ms")
        self.utterance_end_secs = int(utterance_end_ms) / 1000 if utterance_end_ms else None
        # `endpointing` (ms of silence, or "false") when the client sets it, else the fake's.
        endpointing = record.query.get("endpointing")
        self.endpoint_secs: float | None = (
            server.endpoint_silence_secs
            if endpointing is None
            else None
            if endpointing == "false"
            else int(endpointing) / 1000
        )
        self.frame_bytes = int(record.sample_rate * FRAME_SECS) * 2 * record.channels
        self.pending = bytearray()
        self.clock = 0.0  # seconds of audio received so far (the stream's timeline)
        self.in_speech = False  # an utterance is open (speech seen, no final sent yet)
        self.start = 0.0  # where the current utterance started, on the stream timeline
        self.voiced = 0.0  # voiced seconds in the current utterance
        self.silence = 0.0  # trailing silent seconds
        self.interims_sent = 0
        self.last_word_end: float | None = None  # for UtteranceEnd
        self.utterance_end_sent = True
        self.fault: str | None = None  # injected into the open utterance
        self.hung = False  # a "hang" fault: everything sent on this connection is dropped

    def _utterance(self) -> Utterance:
        script = self.server.script
        return script[min(self.server.utterances_heard, len(script) - 1)]

    async def send(self, message: dict[str, Any]) -> None:
        if self.hung:
            return
        self.record.sent.append(message)
        await self.ws.send(json.dumps(message))

    async def on_audio(self, data: bytes) -> None:
        self.record.audio += data
        self.pending += data
        while len(self.pending) >= self.frame_bytes:
            frame = bytes(self.pending[: self.frame_bytes])
            del self.pending[: self.frame_bytes]
            await self._on_frame(frame)

    async def _on_frame(self, frame: bytes) -> None:
        samples = np.frombuffer(frame, dtype="<i2").astype(np.float32)
        loud = float(np.sqrt(np.mean(samples**2))) > VOICED_RMS
        self.clock += FRAME_SECS
        if loud:
            self.record.voiced_seconds += FRAME_SECS
            if not self.in_speech:
                self.in_speech, self.start = True, self.clock - FRAME_SECS
                self.voiced, self.interims_sent = 0.0, 0
                self.fault = self.server.faults.pop(0) if self.server.faults else None
            self.voiced += FRAME_SECS
            self.silence = 0.0
        elif self.in_speech:
            self.silence += FRAME_SECS
        else:
            if not self.utterance_end_sent and self._utterance_end_due():
                await self._send_utterance_end()
            return

        utterance = self._utterance()
        # Interim results (is_final: false) while audio arrives, only when asked for them.
        while (
            self.interim_results
            and self.interims_sent < len(utterance.interims)
            and self.voiced >= utterance.interims[self.interims_sent][0]
        ):
            await self._send_results(utterance.interims[self.interims_sent][1], is_final=False)
            self.interims_sent += 1
        # Endpointing: enough silence after speech ends the utterance with speech_final: true.
        if self.in_speech and self.endpoint_secs is not None and self.silence >= self.endpoint_secs - 1e-9:
            await self._finish(speech_final=True, from_finalize=False)

    def _utterance_end_due(self) -> bool:
        return (
            self.utterance_end_secs is not None
            and self.last_word_end is not None
            and self.clock - self.last_word_end >= self.utterance_end_secs
        )

    async def _send_utterance_end(self) -> None:
        # "UtteranceEnd" response (Utterance End docs): sent when utterance_end_ms is set and
        # that much time has passed since the last finalized word.
        self.utterance_end_sent = True
        await self.send({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": round(self.last_word_end, 3)})

    async def _finish(self, *, speech_final: bool, from_finalize: bool) -> None:
        """Send the scripted final transcript of the open utterance."""
        if self.fault == "error":
            await self.ws.close(1011, "NET-0000")
            return
        if self.fault == "hang":
            self.hung, self.in_speech = True, False
            return
        utterance = self._utterance()
        self.server.utterances_heard += 1
        await self._send_results(utterance.final, is_final=True, speech_final=speech_final, from_finalize=from_finalize)
        self.in_speech = False
        self.last_word_end = self.clock - self.silence
        self.utterance_end_sent = self.utterance_end_secs is None

    async def _send_results(
        self, transcript: str, *, is_final: bool, speech_final: bool = False, from_finalize: bool = False
    ) -> None:
        # "Results" response (API reference, Live audio): transcript alternatives with word
        # timings, `is_final` / `speech_final` (endpointing docs), `from_finalize` (Finalize docs).
        start = self.start if self.in_speech else self.clock
        end = self.clock - self.silence if self.in_speech else self.clock
        duration = max(end - start, FRAME_SECS)
        words = transcript.split()
        step = duration / max(len(words), 1)
        await self.send(
            {
                "type": "Results",
                "channel_index": [0, 1],
                "duration": round(duration, 3),
                "start": round(start, 3),
                "is_final": is_final,
                "speech_final": speech_final,
                "from_finalize": from_finalize,
                "channel": {
                    "alternatives": [
                        {
                            "transcript": transcript,
                            "confidence": 0.99,
                            "words": [
                                {
                                    "word": word.strip(".,?!").lower(),
                                    "start": round(start + i * step, 3),
                                    "end": round(start + (i + 1) * step, 3),
                                    "confidence": 0.99,
                                    "punctuated_word": word,
                                }
                                for i, word in enumerate(words)
                            ],
                        }
                    ]
                },
                "metadata": {
                    "request_id": self.request_id,
                    "model_info": {
                        "name": self.record.query.get("model", "general"),
                        "version": "fake",
                        "arch": "fake",
                    },
                    "model_uuid": "00000000-0000-0000-0000-000000000000",
                },
            }
        )

    async def on_control(self, message: dict[str, Any]) -> bool:
        """Handle a JSON control message; returns False when the stream must end."""
        kind = message.get("type")
        if kind == "KeepAlive":
            return True  # KeepAlive docs: the server sends no response.
        if kind == "Finalize":
            # Finalize docs: process what is buffered and return final results flagged
            # from_finalize; with nothing buffered the answer is an empty final.
            if self.in_speech:
                await self._finish(speech_final=False, from_finalize=True)
            else:
                await self._send_results("", is_final=True, from_finalize=True)
            return True
        if kind == "CloseStream":
            # Close Stream docs: finish the buffered audio, send a summary Metadata, close.
            if self.in_speech:
                await self._finish(speech_final=False, from_finalize=False)
            await self.send(
                {
                    "type": "Metadata",
                    "transaction_key": "deprecated",
                    "request_id": self.request_id,
                    "sha256": hashlib.sha256(bytes(self.record.audio)).hexdigest(),
                    "created": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "duration": round(self.record.audio_seconds, 3),
                    "channels": self.record.channels,
                }
            )
            return False
        # Anything else is an error in Deepgram's terms; answer with an Error message.
        await self.send(
            {
                "type": "Error",
                "variant": "UNPARSABLE_CLIENT_MESSAGE",
                "description": f"unknown message type {kind!r}",
                "message": "",
            }
        )
        return True


class FakeDeepgram(ThreadedWebSocketFake):
    """The fake server, run on its own event loop in a background thread.

    Use as a context manager (or `start()` / `stop()`); `url` is the `ws://127.0.0.1:PORT`
    base URL that Pipecat's `DeepgramSTTService(base_url=...)` expects (the SDK appends
    `/v1/listen`). `connections` lists every connection, in order.
    """

    name = "fake-deepgram"

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        script: tuple[Utterance, ...] = DEFAULT_SCRIPT,
        endpoint_silence_secs: float = 0.5,
    ):
        super().__init__(api_key=api_key)
        self.script = script
        self.endpoint_silence_secs = endpoint_silence_secs
        self.utterances_heard = 0
        self.faults: list[str] = []  # "error" / "hang", one per coming utterance

    def inject(self, kind: str) -> None:
        """Make the next utterance fail: `"error"` (stream closed) or `"hang"` (silence)."""
        if kind not in ("error", "hang"):
            raise ValueError(kind)
        self.faults.append(kind)

    def _check_request(self, connection: ServerConnection, request):
        path = urlsplit(request.path).path
        if path != LISTEN_PATH:
            self.rejected.append((request.path, 404))
            return connection.respond(404, "Not Found\n")
        # Live audio reference: `Authorization: Token <api key>` (or Bearer <temporary token>).
        if request.headers.get("Authorization") != f"Token {self.api_key}":
            self.rejected.append((request.path, 401))
            return connection.respond(401, "Invalid credentials.\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        split = urlsplit(ws.request.path)
        record = Connection(
            path=split.path,
            query={k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()},
            headers={k: v for k, v in ws.request.headers.raw_items()},
            opened_at=time.monotonic(),
        )
        self.connections.append(record)
        session = _Session(self, ws, record)
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    await session.on_audio(message)
                    continue
                try:
                    control = json.loads(message)
                except json.JSONDecodeError:
                    control = {"type": None, "raw": message}
                record.control.append(control)
                if not await session.on_control(control):
                    await ws.close(1000, "")
                    break
        except ConnectionClosed:
            pass
        finally:
            record.closed_at = time.monotonic()
