"""Holds the bot's reply while a voice the VAD heard start may be the user going on.

The VAD confirms speech only after its start delay (0.2 s). A reply whose first audio went out
inside that delay began after the user had already started speaking again: they did not hear
it before going on, yet the client got its audio and its picture, and the STT and the turn
record took it as heard, so the rest of a request dictated with pauses ("... January 10,
February 20, [pause] March 30") became a request of its own. Here the reply waits until the
voice is confirmed (the interruption that follows drops what was held) or fades (what was held
goes on, in order). Only a voice that is starting holds anything: otherwise frames pass at once.
"""

from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InterruptionFrame,
    SystemFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.frames import UserVoiceFadedFrame, UserVoiceStartingFrame


class ReplyHold(FrameProcessor):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._voice_starting = False
        self._held: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, UserVoiceStartingFrame):
            self._voice_starting = True
        elif isinstance(frame, InterruptionFrame):
            self._voice_starting, self._held = False, []
        elif isinstance(frame, UserVoiceFadedFrame | VADUserStoppedSpeakingFrame):
            # Faded, or confirmed speech that interrupted nothing (the user was mid-turn).
            await self._release()
        elif self._holds(frame, direction):
            self._held.append(frame)
            return
        await self.push_frame(frame, direction)

    def _holds(self, frame: Frame, direction: FrameDirection) -> bool:
        return (
            self._voice_starting
            and direction == FrameDirection.DOWNSTREAM
            and not isinstance(frame, SystemFrame | EndFrame)
        )

    async def _release(self) -> None:
        held, self._voice_starting, self._held = self._held, False, []
        for frame in held:
            await self.push_frame(frame)
