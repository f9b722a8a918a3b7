"""Audio mode: the user's turns spoken, over `/ws`, to the real server.

Each turn is synthesized offline by Debian's `espeak-ng` (a voice unlike the bot's Piper
voice), resampled to the 16 kHz microphone rate and streamed at real-time pace by the project's
own client (`client/ws.py`), which keeps sending silence in between as a microphone does. The
server runs the whole product: VAD, Smart Turn, STT, LLM, tools, TTS and its turn recorder,
whose `turn-metrics` message gives the per-stage latency of every turn.
"""

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from client.server_process import start_server, stop_server
from client.speech import JOE, Voice, dictation_pcm, speech_pcm, trailing_silence_seconds
from client.ws import VoiceClient

DEFAULT_VOICE = "en-us"
DEFAULT_SPEED = 160  # words per minute


def user_voice(speech: dict[str, Any]) -> Voice:
    """The offline voice of a scenario's `user: {speech: ...}` block: espeak-ng (`voice`,
    `speed` in words a minute) by default, or `service: piper` (Joe, the bot's own voice;
    `length_scale`, above 1 slower)."""
    if speech.get("service") == "piper":
        return Voice("piper", "piper", JOE.speaker, float(speech.get("length_scale") or 1.0))
    voice = str(speech.get("voice") or DEFAULT_VOICE)
    return Voice(voice, "espeak", voice, int(speech.get("speed") or DEFAULT_SPEED))


TURN_DONE_TIMEOUT_S = 60.0


def server_env(stack: str) -> dict[str, str]:
    """`embedded`: the offline stack whatever keys are set; `auto`: what the settings say."""
    if stack == "embedded":
        return {}
    return {
        f"AGENT_{stage}_PROVIDER": os.environ.get(f"AGENT_{stage}_PROVIDER", "auto") for stage in ("STT", "LLM", "TTS")
    }


class AudioServer:
    """The real server as a child process on a loopback port, for one eval run."""

    def __init__(self, run_dir: Path, stack: str):
        self._log = run_dir / "server.log"
        self._env = {**server_env(stack), "AGENT_GREETING": ""}
        self._process = None
        self.ws_url = ""

    async def __aenter__(self) -> "AudioServer":
        self._process, url = await asyncio.to_thread(start_server, self._log, **self._env)
        self.ws_url = url.replace("http://", "ws://") + "/ws"
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.to_thread(stop_server, self._process)


class AudioSession:
    """One spoken conversation over `/ws`; also the Pipecat eval driver's client."""

    has_user_tts = True

    def __init__(self, ws_url: str, speech: dict[str, Any], on_message):
        self._client = VoiceClient(ws_url)
        self._voice = user_voice(speech)
        self._on_message = on_message
        self.speech_ends: list[float] = []
        self._speaking: asyncio.Task | None = None
        self._pump: asyncio.Task | None = None

    async def __aenter__(self) -> "AudioSession":
        await self._client.__aenter__()
        self._pump = asyncio.create_task(self._forward())
        await self._client.ready()
        return self

    async def __aexit__(self, *exc) -> None:
        tasks = [t for t in (self._pump, self._speaking) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._client.__aexit__(*exc)

    async def _forward(self) -> None:
        """Hands each RTVI message to the event stream as it arrives (ends with the session)."""
        seen = 0
        while True:
            messages = self._client.messages
            while seen < len(messages):
                await self._on_message(messages[seen].message, messages[seen].at)
                seen += 1
            await asyncio.sleep(0.01)

    def _turn_metrics(self) -> list[dict[str, Any]]:
        return [
            m.data["turn"]
            for m in self._client.messages
            if m.type == "server-message" and m.data.get("type") == "turn-metrics"
        ]

    async def say(self, text: str) -> None:
        """Starts speaking `text` and returns, as Pipecat's eval client does: the turn's budget
        runs from the start of the speech, and the matcher is already listening when the bot
        reacts to it."""
        await self._start_speaking(await asyncio.to_thread(speech_pcm, text, voice=self._voice))

    async def say_with_pauses(self, parts: list[str | int]) -> None:
        """Like `say`, for a turn dictated with pauses: text, and pauses in milliseconds
        (Pipecat's `user: [text, {pause_ms: 600}, text]`)."""
        texts: list[str] = []
        pauses: list[float] = []
        for part in parts:
            if isinstance(part, str):
                if len(texts) > len(pauses):
                    pauses.append(0.0)
                texts.append(part)
            elif texts and len(pauses) < len(texts):
                pauses.append(part / 1000)
        pcm = await asyncio.to_thread(
            dictation_pcm, tuple(texts), tuple(pauses[: len(texts) - 1]) or (0.0,), self._voice
        )
        await self._start_speaking(pcm)

    async def _start_speaking(self, pcm: bytes) -> None:
        if self._speaking is not None:
            await self._speaking  # a microphone says one thing at a time
        self._speaking = asyncio.create_task(self._speak(pcm))

    async def _speak(self, pcm: bytes) -> None:
        sent = await self._client.say(pcm)
        # Latency figures start at the end of the speech itself, before the clip's silence.
        self.speech_ends.append(sent - trailing_silence_seconds(pcm))

    async def send_text(self, text: str) -> None:
        await self.say(text)

    async def wait_idle(self) -> None:
        """Until every spoken turn so far was closed by the server (its turn-metrics arrived)."""
        deadline = time.monotonic() + TURN_DONE_TIMEOUT_S
        if self._speaking is not None:
            await asyncio.wait_for(asyncio.shield(self._speaking), TURN_DONE_TIMEOUT_S)
        while len(self._turn_metrics()) < len(self.speech_ends) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def turn_records(self) -> list[dict[str, Any]]:
        return self._turn_metrics()

    def voice_to_voice(self) -> list[float]:
        """Per turn: end of the user's speech -> first voiced bot audio at this client."""
        values = []
        for i, end in enumerate(self.speech_ends):
            nxt = self.speech_ends[i + 1] if i + 1 < len(self.speech_ends) else float("inf")
            first = self._client.first_voiced_audio_after(end)
            if first is not None and first < nxt:
                values.append(first - end)
        return values
