"""Browser WebSocket transport: Pipecat's protobuf frames with RTVI messages inside."""

from collections.abc import Callable

from fastapi import WebSocket
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)

from bot.limits import ClientAllowance
from bot.transports.serializer import CheckedProtobufSerializer


def create_websocket_transport(
    websocket: WebSocket,
    on_rejected: Callable[[str], None] | None = None,
    allowance: ClientAllowance | None = None,
) -> FastAPIWebsocketTransport:
    return FastAPIWebsocketTransport(
        websocket,
        FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=CheckedProtobufSerializer(on_rejected=on_rejected, allowance=allowance),
            session_timeout=None,
            # Origins are checked by the server before the socket is accepted (bot/auth.py),
            # with the same-origin rule Pipecat's exact-match list lacks.
            allowed_origins=[],
        ),
    )
