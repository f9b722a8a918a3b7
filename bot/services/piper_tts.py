"""Pipecat TTS service over the process-wide Piper voice (Pipecat's PiperTTSService loads a
voice per instance, i.e. per session: seconds and ~250 MB each)."""

import asyncio
from collections.abc import AsyncGenerator

from pipecat.frames.frames import ErrorFrame, Frame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

from bot.engines.piper_voice import SharedPiperVoice


class SharedPiperTTSService(TTSService):
    def __init__(self, *, voice: SharedPiperVoice, **kwargs):
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model="piper", voice=voice.name, language="en"),
            **kwargs,
        )
        self._voice = voice

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        async def sentences():
            for chunk in await asyncio.to_thread(self._voice.synthesize, text):
                yield chunk

        try:
            await self.start_tts_usage_metrics(text)
            async for frame in self._stream_audio_frames_from_iterator(
                sentences(), in_sample_rate=self._voice.sample_rate, context_id=context_id
            ):
                await self.stop_ttfb_metrics()
                yield frame
        except Exception as e:
            yield ErrorFrame(error=f"Piper TTS failed: {e}")
        finally:
            await self.stop_ttfb_metrics()
