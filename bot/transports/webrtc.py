"""SmallWebRTC (aiortc) peer connections, negotiated through `/api/offer`."""

from collections.abc import Callable

from loguru import logger
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport

from bot.transports.client_messages import (
    NOT_AN_ENVELOPE,
    decode_client_json,
    excerpt,
    rtvi_error_message,
)


def create_webrtc_transport(connection: SmallWebRTCConnection) -> SmallWebRTCTransport:
    return SmallWebRTCTransport(connection, TransportParams(audio_in_enabled=True, audio_out_enabled=True))


def check_data_channel(connection: SmallWebRTCConnection, on_rejected: Callable[[str], None] | None = None) -> None:
    """Read the peer's data channel messages within `decode_client_json`'s bounds.

    Pipecat's connection parses each data channel message with a plain `json.loads` and logs
    a bad one in full at ERROR. No public hook lets a message be checked first, so when the
    channel opens its message listeners (Pipecat's, registered just before) are put behind
    this check: a message that fails it is answered with an RTVI error and never reaches
    them. The keep-alive pings pass as they are.
    """

    @connection.pc.on("datachannel")
    def checked(channel) -> None:
        listeners = channel.listeners("message")
        if not listeners:  # Pipecat's own listener must be there to be guarded
            raise RuntimeError("the WebRTC data channel has no message listener to check for")
        channel.remove_all_listeners("message")

        @channel.on("message")
        async def on_message(message) -> None:
            if not (isinstance(message, str) and message.startswith("ping")):
                try:
                    value = decode_client_json(message)
                    if not (isinstance(value, dict) and isinstance(value.get("type"), str)):
                        # Pipecat reads `type` first, to tell signalling from RTVI.
                        raise ValueError(NOT_AN_ENVELOPE)
                except ValueError as e:
                    logger.debug(f"Refused a data channel message ({e}): {excerpt(message)}")
                    if on_rejected:
                        on_rejected("bad_input")
                    connection.send_app_message(rtvi_error_message(str(e)))
                    return
            for listener in listeners:
                await listener(message)


async def disconnect_peer(connection: SmallWebRTCConnection, reason: str) -> None:
    """Tell the peer why in a fatal RTVI error, then close its connection."""
    connection.send_app_message(rtvi_error_message(reason, fatal=True))
    await connection.disconnect()
