"""Tells the STT the moment the user goes quiet, before the VAD's stop delay has run out.

Pipecat's VAD reports a stop only after `stop_secs` (0.2 s) of silence. The analyzer knows
earlier: its state turns STOPPING at the first quiet window. An interim transcript decoded
right then holds the whole utterance, and the LLM can prefill it during the stop delay and the
final decode (~0.35 s), so the turn's request finds its prompt computed. The interims decoded
every 0.5 s of speech had missed the last words in 6 turns of 10 under load, and the turn then
computed 11-28 new prompt tokens (~0.25 s) instead of 1.

The VAD reaches QUIET only through STOPPING, so the last pause before a stop marks where the
user's last word ended: the STT's final transcript is the interim decoded at that pause, unless
the user spoke again (`UserSpeechResumedFrame`).

It also tells the pipeline when a voice starts, before the VAD's start delay confirms it as
speech, and when such a voice fades unconfirmed (`bot.processors.reply_hold`).
"""

from loguru import logger
from pipecat.audio.vad.vad_analyzer import VADState
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection

from bot.frames import UserSpeechPausedFrame, UserSpeechResumedFrame, UserVoiceFadedFrame, UserVoiceStartingFrame
from bot.turn_models.silero import SharedSileroVADAnalyzer


class SpeechPauseVADProcessor(VADProcessor):
    def __init__(self, *, vad_analyzer: SharedSileroVADAnalyzer, **kwargs):
        super().__init__(vad_analyzer=vad_analyzer, **kwargs)
        vad_analyzer.on_state = self._on_vad_state
        self._vad_state = VADState.QUIET

    async def _on_vad_state(self, state: VADState) -> None:
        if self._vad_state == VADState.SPEAKING and state == VADState.STOPPING:
            await self.push_frame(UserSpeechPausedFrame(), FrameDirection.DOWNSTREAM)
        elif self._vad_state == VADState.STOPPING and state == VADState.SPEAKING:
            await self.push_frame(UserSpeechResumedFrame(), FrameDirection.DOWNSTREAM)
        elif self._vad_state == VADState.QUIET and state == VADState.STARTING:
            logger.debug(f"{self}: a voice is starting")
            await self.push_frame(UserVoiceStartingFrame(), FrameDirection.DOWNSTREAM)
        elif self._vad_state == VADState.STARTING and state == VADState.QUIET:
            logger.debug(f"{self}: the voice faded")
            await self.push_frame(UserVoiceFadedFrame(), FrameDirection.DOWNSTREAM)
        self._vad_state = state
