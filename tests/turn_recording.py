"""Frames handed to a real `TurnRecorder` as an observer sees them; the records it closes."""

from pipecat.observers.base_observer import FramePushed
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.observers.turn_recorder import TurnRecorder
from bot.records import TurnRecord


async def recorded_turns(frames) -> list[TurnRecord]:
    recorded = []

    async def on_turn(turn):
        recorded.append(turn)

    recorder = TurnRecorder(session_id="s1", providers={}, engines={}, on_turn=on_turn)
    source = FrameProcessor()
    for frame in frames:
        await recorder.on_push_frame(FramePushed(source, source, frame, FrameDirection.DOWNSTREAM, 0))
    return recorded
