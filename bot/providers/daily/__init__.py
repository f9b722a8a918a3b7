"""Daily's room: a WebRTC room and its tokens made through Daily's REST API, the bot joined with
Pipecat's `DailyTransport`, and what Daily charges for the minutes a session spends there."""

import time
from dataclasses import dataclass

import aiohttp
from loguru import logger
from pipecat.transports.daily.transport import DailyParams, DailyTransport
from pipecat.transports.daily.utils import (
    DailyRESTHelper,
    DailyRoomParams,
    DailyRoomProperties,
)

from bot.costs import PriceTable
from bot.settings import Settings

BOT_NAME = "Voice agent"
PARTICIPANTS = 2  # Daily bills every participant of the room: the user and the bot


@dataclass(frozen=True)
class DailyRoom:
    url: str
    user_token: str
    bot_token: str


def _api_key(settings: Settings) -> str:
    # Only `POST /api/daily` comes here, and the server answers it only with a key set.
    assert settings.daily_api_key is not None
    return settings.daily_api_key.get_secret_value()


def _rest(settings: Settings, http: aiohttp.ClientSession) -> DailyRESTHelper:
    return DailyRESTHelper(
        daily_api_key=_api_key(settings),
        daily_api_url=settings.daily_api_url,
        aiohttp_session=http,
    )


async def create_room(settings: Settings) -> DailyRoom:
    """A private room that expires after `daily_room_minutes`, a token for the user and one
    (owner) for the bot."""
    lifetime = settings.daily_room_minutes * 60
    async with aiohttp.ClientSession() as http:
        daily = _rest(settings, http)
        room = await daily.create_room(
            DailyRoomParams(
                privacy="private",  # only holders of its tokens get in
                properties=DailyRoomProperties(exp=time.time() + lifetime),
            )
        )
        try:
            user_token = await daily.get_token(room.url, expiry_time=lifetime, owner=False)
            bot_token = await daily.get_token(room.url, expiry_time=lifetime, owner=True)
        except Exception:
            await daily.delete_room_by_url(room.url)  # leave no orphaned room behind
            raise
    return DailyRoom(url=room.url, user_token=user_token, bot_token=bot_token)


async def delete_room(settings: Settings, room: DailyRoom) -> None:
    """Delete a room once its session has ended: an idle room is a billable resource left for
    anyone holding its token. A failure is logged; the room still expires on its own."""
    try:
        async with aiohttp.ClientSession() as http:
            await _rest(settings, http).delete_room_by_url(room.url)
    except Exception as e:
        logger.warning(f"Daily room {room.url} could not be deleted ({e}); it expires on its own")


def create_daily_transport(room: DailyRoom, settings: Settings) -> DailyTransport:
    return DailyTransport(
        room.url,
        room.bot_token,
        BOT_NAME,
        params=DailyParams(
            api_key=_api_key(settings),
            api_url=settings.daily_api_url,
            audio_in_enabled=True,
            audio_out_enabled=True,
        ),
    )


def nobody_left(transport: DailyTransport) -> bool:
    """True once the bot is alone in the room: the session then ends."""
    return not [pid for pid in transport.participants() if pid != "local"]


def transport_fee(duration_secs: float, prices: PriceTable) -> float:
    """US dollars for `duration_secs` of a session in a Daily room."""
    return PARTICIPANTS * duration_secs / 60 * prices.daily_per_participant_minute
