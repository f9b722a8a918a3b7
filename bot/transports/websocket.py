"""Browser WebSocket transport: Pipecat's protobuf frames with RTVI messages inside."""

from fastapi import WebSocket
from bot.transports.serializer import CheckedProtobufSerializer
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)


def create_websocket_transport(websocket: WebSocket) -> FastAPIWebsocketTransport:
    return FastAPIWebsocketTransport(
        websocket,
        FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=CheckedProtobufSerializer(),
            session_timeout=None,
        ),
    )
