"""What several test files share: where the repository is, how long a spoken turn may take, and
the steps a conversation over `/ws` is made of."""

import asyncio
import time

from client.server_process import ROOT  # the repository
from client.speech import speech_pcm
from client.ws import Received, VoiceClient

__all__ = ["ROOT", "TOOL_TURN_TIMEOUT", "TURN_TIMEOUT", "answer_to", "connected", "is_turn_metrics", "until"]

# Seconds the real server may take over a spoken turn's step: the greeting, an answer, its record.
TURN_TIMEOUT = 30
# The same for a turn that runs tools: the call, the tool and the answer after it take longer.
TOOL_TURN_TIMEOUT = 40


def is_turn_metrics(m: Received) -> bool:
    """The server message that carries a turn's record once the turn is over."""
    return m.type == "server-message" and m.data.get("type") == "turn-metrics"


async def until(condition, timeout: float) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass (bounded wait)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def connected(url: str, timeout: float = TURN_TIMEOUT) -> VoiceClient:
    """An open client that has heard the greeting out; the caller closes it."""
    client = VoiceClient(url)
    await client.__aenter__()
    await client.ready()
    # The greeting plays first; speaking over it would (rightly) interrupt it.
    await client.wait_for(lambda m: m.type == "bot-stopped-speaking", timeout)
    return client


async def answer_to(client: VoiceClient, text: str) -> tuple[float, str, float]:
    """Speak `text`, wait for the whole spoken answer; (end of speech, bot text, bot-stopped time)."""
    speech_end = await client.say(speech_pcm(text))
    stopped = await client.wait_for(lambda m: m.type == "bot-stopped-speaking", TURN_TIMEOUT, after=speech_end)
    return speech_end, client.bot_text(speech_end, stopped.at), stopped.at
