"""Decides whether the user heard the reply they started speaking over.

A reply heard, then spoken over, is a barge-in: what the user says next is a new request. But a
voice that began before the reply's first audio, or less than a reaction time after it, began
before the user could have heard it: they were going on with their request ("a bar chart of
monthly sales: January 10, February 20, [pause] March 30") while the answer to its first part
started playing. `ReplyHold` holds a reply while a voice is starting; this covers the voice
the VAD heard start only just after the reply's audio had gone out (Silero lags the onset by a
window or two). Then `ReplyUnheardFrame` goes out just before the speech's
`VADUserStartedSpeakingFrame`, and the STT keeps decoding the request whole, the assistant
aggregator keeps the reply's words out of the context, and the turn recorder keeps the turn open.

Placed right after the VAD: it sees the voice start as the VAD reports it, and the bot's
`BotStartedSpeakingFrame` on its way upstream from the output transport.
"""

import time

from pipecat.frames.frames import BotStartedSpeakingFrame, Frame, VADUserStartedSpeakingFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.frames import ReplyUnheardFrame, UserVoiceStartingFrame

# From the reply's first audio leaving the server to the user's voice reaching the VAD: the
# trip to the speaker and back, and the time a person takes to react to what they hear.
REACTION_SECS = 0.3


class UnheardReplyCheck(FrameProcessor):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._reply_started_at: float | None = None  # the first reply audio since the user last spoke
        self._voice_started_at: float | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, BotStartedSpeakingFrame):
            if self._reply_started_at is None:
                self._reply_started_at = time.monotonic()
        elif isinstance(frame, UserVoiceStartingFrame):
            self._voice_started_at = time.monotonic()
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            if self._unheard():
                await self.push_frame(ReplyUnheardFrame())
            self._reply_started_at = None
        await self.push_frame(frame, direction)

    def _unheard(self) -> bool:
        if self._reply_started_at is None:
            return False
        voice_started_at = self._voice_started_at if self._voice_started_at is not None else time.monotonic()
        return voice_started_at - self._reply_started_at < REACTION_SECS
