"""Pipecat's protobuf serializer, with every inbound frame checked before it enters a pipeline.

Pipecat's own serializer drops a bad message silently, and a decode error (a text frame, a
garbage protobuf) escapes its receive loop, which ends the session. Here a bad frame is
answered with an RTVI `error` message that names the problem, sent straight back to the
client as an urgent transport message, and the session keeps working. A frame over
`MAX_FRAME_BYTES` never gets this far: the server's WebSocket layer closes the connection
with code 1009 (see `server.main`).
"""

import json
from collections.abc import Callable

from google.protobuf.message import DecodeError
from loguru import logger
from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputTransportMessageUrgentFrame
from pipecat.frames.protobufs import frames_pb2
from pipecat.serializers.protobuf import ProtobufFrameSerializer

from bot.pipeline import AUDIO_IN_RATE

MAX_FRAME_BYTES = 256 * 1024  # ~8 s of 16 kHz audio: far above any sane chunk
AUDIO_CHANNELS = 1
SAMPLE_BYTES = 2  # 16-bit PCM


def rtvi_error(description: str, *, fatal: bool = False) -> OutputTransportMessageUrgentFrame:
    return OutputTransportMessageUrgentFrame(
        message={"label": "rtvi-ai", "type": "error", "data": {"error": description, "fatal": fatal}}
    )


async def encoded_rtvi_error(description: str, *, fatal: bool) -> bytes:
    """The RTVI error as the protobuf bytes a client reads, for a socket with no pipeline."""
    return await ProtobufFrameSerializer().serialize(rtvi_error(description, fatal=fatal))


def _problem(data: str | bytes, sample_rate: int) -> str | None:
    """What is wrong with an inbound WebSocket message, or None when it is well formed."""
    if isinstance(data, str):
        return "text WebSocket frames are not accepted: send binary protobuf frames"
    if len(data) > MAX_FRAME_BYTES:
        return f"frame of {len(data)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit"
    try:
        frame = frames_pb2.Frame.FromString(data)
    except DecodeError:
        return "malformed protobuf frame"
    kind = frame.WhichOneof("frame")
    if kind == "audio":
        audio = frame.audio
        if audio.num_channels != AUDIO_CHANNELS:
            return f"audio must be mono (1 channel), got {audio.num_channels} channels"
        if audio.sample_rate != sample_rate:
            return f"unsupported audio sample rate {audio.sample_rate}: send {sample_rate} Hz"
        if len(audio.audio) % (SAMPLE_BYTES * audio.num_channels):
            return (
                f"audio of {len(audio.audio)} bytes is not whole 16-bit samples"
                f" ({SAMPLE_BYTES * audio.num_channels} bytes per frame)"
            )
    elif kind == "message":
        try:
            message = json.loads(frame.message.data)
        except json.JSONDecodeError as e:
            return f"message is not valid JSON: {e.msg}"
        if (
            not isinstance(message, dict)
            or message.get("label") != "rtvi-ai"
            or not isinstance(message.get("type"), str)
            or not message["type"]
        ):
            return "message is not an RTVI envelope ({'label': 'rtvi-ai', 'type': '...'})"
        if not isinstance(message.get("data", {}), (dict, type(None))):
            return f"RTVI {message['type']!r} message: data must be an object"
    else:
        return f"unsupported frame kind {kind!r}: send audio or message frames"
    return None


class CheckedProtobufSerializer(ProtobufFrameSerializer):
    def __init__(
        self,
        on_rejected: Callable[[str], None] | None = None,
        sample_rate: int = AUDIO_IN_RATE,
        **kwargs,
    ):
        """`on_rejected` hears of every refused frame (to count errors by kind); audio must
        come at `sample_rate`, the pipeline's input rate (nothing resamples it)."""
        super().__init__(**kwargs)
        self._on_rejected = on_rejected
        self._sample_rate = sample_rate

    def _reject(self, problem: str) -> Frame:
        if self._on_rejected:
            self._on_rejected("bad_input")
        return rtvi_error(problem)

    async def deserialize(self, data: str | bytes) -> Frame | None:
        if problem := _problem(data, self._sample_rate):
            return self._reject(problem)
        try:
            frame = await super().deserialize(data)
        except Exception as e:  # anything escaping here would end the session
            logger.warning(f"Undecodable frame: {e}")
            return self._reject(f"undecodable frame: {e}")
        if isinstance(frame, InputAudioRawFrame) and not frame.audio:
            return None
        return frame
