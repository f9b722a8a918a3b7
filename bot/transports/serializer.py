"""Pipecat's protobuf serializer, with every inbound frame checked before it enters a pipeline.

Pipecat's own serializer drops a bad message silently, and a decode error (a text frame, a
garbage protobuf) escapes its receive loop, which ends the session. Here a bad frame is
answered with an RTVI `error` message that names the problem, sent straight back to the
client as an urgent transport message, and the session keeps working. A frame over
`MAX_FRAME_BYTES` never gets this far: the server's WebSocket layer closes the connection
with code 1009 (see `server.main`).
"""

import asyncio
from collections.abc import Callable

from google.protobuf.message import DecodeError
from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
)
from pipecat.frames.protobufs import frames_pb2
from pipecat.serializers.protobuf import ProtobufFrameSerializer

from bot.audio_rates import AUDIO_IN_RATE
from bot.limits import ABUSE, ClientAllowance
from bot.transports.client_messages import (
    SAMPLE_BYTES,
    audio_problem,
    decode_client_json,
    excerpt,
    rtvi_error,
)

MAX_FRAME_BYTES = 256 * 1024  # ~8 s of 16 kHz audio: far above any sane chunk


async def encoded_rtvi_error(description: str, *, fatal: bool) -> bytes:
    """The RTVI error as the protobuf bytes a client reads, for a socket with no pipeline."""
    encoded = await ProtobufFrameSerializer().serialize(rtvi_error(description, fatal=fatal))
    assert isinstance(encoded, bytes)  # this serializer passes RTVI messages, as protobuf bytes
    return encoded


class CheckedProtobufSerializer(ProtobufFrameSerializer):
    def __init__(
        self,
        on_rejected: Callable[[str], None] | None = None,
        sample_rate: int = AUDIO_IN_RATE,
        allowance: ClientAllowance | None = None,
        **kwargs,
    ):
        """`on_rejected` hears of every refused frame (to count errors by kind); audio must
        come at `sample_rate`, the pipeline's input rate (nothing resamples it), and within
        the client's `allowance`. A message frame's JSON is read once, here, within the bounds
        of `decode_client_json`; what it says is checked with every other transport's
        messages (CheckedRTVIProcessor)."""
        super().__init__(**kwargs)
        self._on_rejected = on_rejected
        self._sample_rate = sample_rate
        self._allowance = allowance
        self._disconnecting: asyncio.Task | None = None

    def _reject(self, problem: str, data: str | bytes) -> Frame | None:
        logger.debug(f"Refused a client frame ({problem}): {excerpt(data)}")
        if self._on_rejected:
            self._on_rejected("bad_input")
        if self._allowance is None:
            return rtvi_error(problem)
        refusal = self._allowance.refused(problem)
        if refusal.abusive and self._allowance.disconnect is not None:
            logger.warning(f"Disconnecting a client: {ABUSE}")
            # Not awaited here: it closes the socket this frame came from.
            self._disconnecting = asyncio.create_task(self._allowance.disconnect(ABUSE))
            return None
        return rtvi_error(problem) if refusal.tell else None

    async def deserialize(self, data: str | bytes) -> Frame | None:
        if isinstance(data, str):
            return self._reject("text WebSocket frames are not accepted: send binary protobuf frames", data)
        if len(data) > MAX_FRAME_BYTES:
            return self._reject(f"frame of {len(data)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit", data)
        try:
            # The generated protobuf module comes without type stubs (Pipecat ignores this too).
            proto = frames_pb2.Frame.FromString(data)  # type: ignore[attr-defined]
        except DecodeError:
            return self._reject("malformed protobuf frame", data)
        kind = proto.WhichOneof("frame")
        if kind == "message":
            try:
                return InputTransportMessageFrame(message=decode_client_json(proto.message.data))
            except ValueError as e:
                return self._reject(str(e), proto.message.data)
        if kind == "audio":
            audio = proto.audio
            if problem := audio_problem(audio.sample_rate, audio.num_channels, len(audio.audio), self._sample_rate):
                return self._reject(problem, data)
            if not audio.audio:
                return None
            seconds = len(audio.audio) / (SAMPLE_BYTES * audio.sample_rate)
            if self._allowance is not None and not self._allowance.audio_allowed(seconds):
                return self._reject(
                    "audio is arriving faster than real time allows (AGENT_AUDIO_RATE_LIMIT); the excess is dropped",
                    b"",
                )
            return InputAudioRawFrame(audio=audio.audio, sample_rate=audio.sample_rate, num_channels=audio.num_channels)
        return self._reject(f"unsupported frame kind {kind!r}: send audio or message frames", data)
