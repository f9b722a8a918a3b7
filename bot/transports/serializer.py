"""Pipecat's protobuf serializer, with every inbound frame checked before it enters a pipeline.

Pipecat's own serializer drops a bad message silently, or lets a decode error end the
connection. Here a bad frame is answered with an RTVI `error` message that names the
problem, sent straight back to the client as an urgent transport message, and the session
keeps working.
"""

import json
from collections.abc import Callable

from google.protobuf.message import DecodeError
from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputTransportMessageUrgentFrame
from pipecat.frames.protobufs import frames_pb2
from pipecat.serializers.protobuf import ProtobufFrameSerializer

MAX_FRAME_BYTES = 256 * 1024  # ~8 s of 16 kHz audio: far above any sane chunk
AUDIO_SAMPLE_RATES = {8000, 16000, 24000, 44100, 48000}


def rtvi_error(description: str) -> OutputTransportMessageUrgentFrame:
    return OutputTransportMessageUrgentFrame(
        message={"label": "rtvi-ai", "type": "error", "data": {"error": description, "fatal": False}}
    )


def _problem(data: str | bytes) -> str | None:
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
        if audio.num_channels != 1:
            return f"audio must be mono, got {audio.num_channels} channels"
        if audio.sample_rate not in AUDIO_SAMPLE_RATES:
            return f"unsupported audio sample rate {audio.sample_rate}"
        if len(audio.audio) % 2:
            return "audio must be 16-bit PCM: odd byte length"
    elif kind == "message":
        try:
            message = json.loads(frame.message.data)
        except json.JSONDecodeError as e:
            return f"message is not valid JSON: {e.msg}"
        if not isinstance(message, dict) or message.get("label") != "rtvi-ai" or "type" not in message:
            return "message is not an RTVI envelope ({'label': 'rtvi-ai', 'type': ...})"
    else:
        return f"unsupported frame kind {kind!r}: send audio or message frames"
    return None


class CheckedProtobufSerializer(ProtobufFrameSerializer):
    def __init__(self, on_rejected: Callable[[str], None] | None = None, **kwargs):
        """`on_rejected` hears of every refused frame (to count errors by kind)."""
        super().__init__(**kwargs)
        self._on_rejected = on_rejected

    async def deserialize(self, data: str | bytes) -> Frame | None:
        if problem := _problem(data):
            if self._on_rejected:
                self._on_rejected("bad_input")
            return rtvi_error(problem)
        frame = await super().deserialize(data)
        if isinstance(frame, InputAudioRawFrame) and not frame.audio:
            return None
        return frame
