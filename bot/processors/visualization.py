"""Sends each tool's visualization to the page just before the sentence that presents it.

Placed right after the TTS (before `transport.output()`). A tool queues its visualization with
`SessionResources.show(tool_call_id, ...)`; when that call's `FunctionCallResultFrame` passes
(the LLM broadcasts it, and the TTS forwards it downstream in order, behind the audio queued
before it), the visualization is taken out of `pending_visualizations` and held. The next
`TTSAudioRawFrame` is the first audio of the answer that presents the result: the held
visualizations are pushed right before it as non-urgent `OutputTransportMessageFrame`s with the
RTVI envelope, so the output transport queues them behind the audio already playing and the
page draws the chart as the bot starts the sentence about it. (`RTVIServerMessageFrame` is a
system frame: it would go out at once, ahead of the queued audio.)

The message, an RTVI `server-message`:

    {"label": "rtvi-ai", "type": "server-message",
     "data": {"type": "visualization", "turn_id": ..., "utterance_id": <TTS context id>,
              "tool_call_id": ..., "visualization": {"type": "chart", "title": ..., "figure": ...}}}

Turn id: Pipecat has no turn id on frames (its `TurnTrackingObserver` only counts turns, and
lives on the worker), so the id comes from `turn_id()`, a callable the pipeline passes (the
`TurnRecorder`'s current `TurnRecord.turn_id`, so the visualization, the turn-metrics message
and the stored turn share one id). Without it, the processor numbers turns itself ("t1", "t2",
...), counting `UserStartedSpeakingFrame`s.

Interruptions: an `InterruptionFrame` drops the visualizations still held. Their sentence was
never spoken (the user barged in, or a new user turn began before the answer), and a chart
appearing without its sentence, or next to a later answer, would be misleading; the result
itself stays in `SessionResources.results`, so "show that chart" brings it back. A
visualization already sent is not recalled: it sits in the output queue with the audio, which
the transport clears on interruption, so it may not reach the page either, but it is kept.

A reply the user went on over before they could have heard it (`ReplyUnheardFrame`, see
`bot.processors.unheard_reply`) may have had its picture sent: its audio went out just before
the user's voice began. The page is told to take that picture down at once (an urgent
`visualization-withdrawn` message naming its tool calls): it answered part of a request the
user was still saying, and the answer to the whole request brings its own. The session keeps it
as shown, which it was.

Other cases: a result whose own sentence is spoken (`run_llm=False`, see
`bot.processors.tool_result_speech`) is held the same way, for that sentence's first audio; a
text-only answer (`skip_tts` text frames) sends the held visualizations with its first text.
"""

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    FunctionCallResultFrame,
    InterruptionFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TextFrame,
    TTSAudioRawFrame,
    UserStartedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.frames import ReplyUnheardFrame
from bot.session_resources import SessionResources
from bot.transports.client_messages import rtvi_server_message

MESSAGE_TYPE = "visualization"
WITHDRAWN_MESSAGE_TYPE = "visualization-withdrawn"


@dataclass
class _Held:
    tool_call_id: str
    visualization: dict[str, Any]


def _json_safe(value: Any) -> Any:
    """A JSON-ready copy: figures built with numpy or datetimes still serialise."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _json_safe(value.tolist())
    if hasattr(value, "isoformat"):  # datetime, date
        return value.isoformat()
    return str(value)


def visualization_message(
    visualization: dict[str, Any],
    *,
    turn_id: str | None,
    utterance_id: str | None,
    tool_call_id: str | None = None,
) -> dict[str, Any]:
    """The RTVI envelope of one visualization (what the page's `visualization` handler gets)."""
    return rtvi_server_message(
        {
            "type": MESSAGE_TYPE,
            "turn_id": turn_id,
            "utterance_id": utterance_id,
            "tool_call_id": tool_call_id,
            "visualization": visualization,
        }
    )


def withdrawn_message(tool_call_ids: list[str], *, turn_id: str | None) -> dict[str, Any]:
    """The RTVI envelope telling the page to take down the visualizations of these tool calls."""
    return rtvi_server_message({"type": WITHDRAWN_MESSAGE_TYPE, "turn_id": turn_id, "tool_call_ids": tool_call_ids})


class VisualizationProcessor(FrameProcessor):
    def __init__(
        self,
        resources: SessionResources,
        on_visualization: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
        *,
        turn_id: Callable[[], str | None] | None = None,
        **kwargs,
    ):
        """`on_visualization(entry)` is awaited after each visualization was pushed, with the
        visualization plus `turn_id`, `utterance_id`, `tool_call_id` and `shown_at` (Unix
        time): the session keeps it. `turn_id()` returns the current turn's id (see above)."""
        super().__init__(**kwargs)
        self._resources = resources
        self._on_visualization = on_visualization
        self._turn_id_source = turn_id
        self._turns = 0  # own count, used when no turn_id source is given
        self._last_turn_id: str | None = None
        self._held: list[_Held] = []
        self._sent_since_user_spoke: list[str] = []  # tool call ids

    @property
    def held(self) -> int:
        """How many visualizations wait for their sentence."""
        return len(self._held)

    def _current_turn_id(self) -> str | None:
        if self._turn_id_source is not None:
            turn_id = self._turn_id_source()
            if turn_id:
                self._last_turn_id = turn_id
            # Between turns (e.g. after the recorder closed one) keep the last known id.
            return self._last_turn_id
        return f"t{self._turns}" if self._turns else None

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)

        shown: list[dict[str, Any]] = []
        if direction == FrameDirection.DOWNSTREAM:
            if isinstance(frame, UserStartedSpeakingFrame):
                self._turns += 1
                self._sent_since_user_spoke = []
            elif isinstance(frame, ReplyUnheardFrame):
                await self._withdraw_sent()
            elif isinstance(frame, InterruptionFrame):
                self._drop_held()
            elif isinstance(frame, FunctionCallResultFrame):
                self._hold(frame)
            elif isinstance(frame, TTSAudioRawFrame) and self._held:
                # The first audio of the sentence presenting the result: visuals go first.
                shown = await self._send_held(utterance_id=frame.context_id)
            elif isinstance(frame, TextFrame) and frame.skip_tts and self._held:
                shown = await self._send_held(utterance_id=None)  # a text-only answer

        await self.push_frame(frame, direction)
        await self._keep(shown)  # after the audio: keeping it never delays speech

    def _hold(self, frame: FunctionCallResultFrame) -> None:
        visualization = self._resources.pending_visualizations.pop(frame.tool_call_id, None)
        if visualization is not None:
            self._held.append(_Held(frame.tool_call_id, visualization))

    def _drop_held(self) -> None:
        if self._held:
            ids = ", ".join(h.tool_call_id for h in self._held)
            logger.debug(f"{self}: interrupted before its sentence, not shown: {ids}")
            self._held.clear()

    async def _withdraw_sent(self) -> None:
        sent, self._sent_since_user_spoke = self._sent_since_user_spoke, []
        if sent:
            logger.debug(f"{self}: its reply was not heard, withdrawn: {', '.join(sent)}")
            message = withdrawn_message(sent, turn_id=self._current_turn_id())
            await self.push_frame(OutputTransportMessageUrgentFrame(message=message))

    async def _send_held(self, *, utterance_id: str | None) -> list[dict[str, Any]]:
        """Push the held visualizations; returns what was shown, for `_keep`."""
        held, self._held = self._held, []
        turn_id = self._current_turn_id()
        shown = []
        for item in held:
            visualization = _json_safe(item.visualization)
            message = visualization_message(
                visualization,
                turn_id=turn_id,
                utterance_id=utterance_id,
                tool_call_id=item.tool_call_id,
            )
            await self.push_frame(OutputTransportMessageFrame(message=message))
            self._sent_since_user_spoke.append(item.tool_call_id)
            shown.append(
                {
                    **visualization,
                    "turn_id": turn_id,
                    "utterance_id": utterance_id,
                    "tool_call_id": item.tool_call_id,
                    "shown_at": time.time(),
                }
            )
        return shown

    async def _keep(self, shown: list[dict[str, Any]]) -> None:
        if self._on_visualization is None:
            return
        for entry in shown:
            try:
                await self._on_visualization(entry)
            except Exception as exc:  # keeping it must never stop the conversation
                logger.warning(f"{self}: could not keep visualization {entry['tool_call_id']}: {exc}")
