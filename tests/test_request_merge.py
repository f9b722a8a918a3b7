"""A request cut by a pause is one request: the merge of its parts in the context, and one
turn record for them (Pipecat's run_test and the real observer)."""

import pytest
from pipecat.audio.turn.base_turn_analyzer import BaseTurnAnalyzer, BaseTurnParams, EndOfTurnState
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMTextFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import TurnMetricsData
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregatorParams
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from turn_recording import recorded_turns

from bot.conversation import current_request, merged_request
from bot.frames import ReplyUnheardFrame, RequestTranscriptionFrame
from bot.pipeline import turn_start_strategies
from bot.processors.request_aggregator import RequestUserAggregator
from bot.processors.request_merge import RequestMerge
from bot.tools import request_goes_on, request_is_whole
from bot.turn_models import MeasuredTurnAnalyzerStopStrategy

pytestmark = pytest.mark.unit

CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "generate_chart", "arguments": "{}"}}],
}
RESULT = {"role": "tool", "tool_call_id": "c1", "content": '{"error": "no numbers yet"}'}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def test_parts_no_heard_answer_separates_are_one_request():
    messages = [
        user("Hi."),
        {"role": "assistant", "content": "Hello!"},
        user("Show me a bar chart of monthly sales."),
        CALL,
        RESULT,  # answered, never heard
        user("January 10, February 20."),
        user("March 30."),
    ]
    joined = merged_request(messages)
    assert joined == [*messages[:2], user("Show me a bar chart of monthly sales. January 10, February 20. March 30.")]
    assert current_request(joined) == joined[-1]["content"]


def test_a_heard_answer_starts_a_new_request():
    heard = [
        user("What time is it?"),
        CALL,
        RESULT,
        {"role": "assistant", "content": "It is noon."},
        user("And in Paris?"),
    ]
    assert merged_request(heard) is None
    assert merged_request([user("One piece.")]) is None
    assert merged_request([user("Chart it."), CALL, RESULT]) is None  # a result to answer


async def test_the_llm_is_sent_the_whole_request():
    context = LLMContext(messages=[user("Is this positive or negative?"), user("I love my new job.")])
    down, _ = await run_test(
        RequestMerge(), frames_to_send=[LLMContextFrame(context)], expected_down_frames=[LLMContextFrame]
    )
    assert down[0].context.get_messages() == [user("Is this positive or negative? I love my new job.")]


def _fragment(text: str) -> list:
    # Pipecat's user aggregator: the turn starts, then the interruption of whatever the bot does.
    return [
        UserStartedSpeakingFrame(),
        InterruptionFrame(),
        TranscriptionFrame(text, "user", ""),
        VADUserStoppedSpeakingFrame(stop_secs=0.0),
        UserStoppedSpeakingFrame(),
        LLMTextFrame("Sure, "),  # the reply to this part starts...
    ]


async def test_a_request_continued_before_its_answer_was_heard_is_one_turn_record():
    turns = await recorded_turns(
        [
            *_fragment("Show me a bar chart of monthly sales."),
            *_fragment("January 10, February 20, March 30."),  # the reply is dropped, unheard
            BotStartedSpeakingFrame(),
            BotStoppedSpeakingFrame(),
        ]
    )
    (turn,) = turns
    assert turn.status == "completed"
    assert turn.user_text == "Show me a bar chart of monthly sales. January 10, February 20, March 30."
    assert turn.latency.answer is not None


async def test_a_reply_that_began_as_the_user_went_on_leaves_one_turn_record():
    """Its audio went out just before the VAD heard the user's next words start: they could not
    have heard it (`ReplyUnheardFrame`), so their words go on with the request."""
    turns = await recorded_turns(
        [
            *_fragment("Show me a bar chart of monthly sales: January 10, February 20."),
            BotStartedSpeakingFrame(),
            ReplyUnheardFrame(),
            *_fragment("March 30."),
            BotStartedSpeakingFrame(),
            BotStoppedSpeakingFrame(),
        ]
    )
    (turn,) = turns
    assert turn.status == "completed"
    assert turn.user_text == "Show me a bar chart of monthly sales: January 10, February 20. March 30."


async def test_a_late_whole_transcript_that_restarts_the_turn_still_leaves_its_record():
    """Under load the whole request's transcript can arrive after the turn ended on its
    parts; Pipecat starts a turn from the transcript alone (no VAD stop follows it), and the
    answer must still close that turn's record."""
    turns = await recorded_turns(
        [
            *_fragment("Show me a bar chart of monthly sales."),
            UserStartedSpeakingFrame(),  # TranscriptionUserTurnStartStrategy: no speech, no VAD stop
            InterruptionFrame(),
            RequestTranscriptionFrame("Show me a bar chart of monthly sales, January 10, February 20.", "user", ""),
            UserStoppedSpeakingFrame(),
            LLMTextFrame("Here is a bar chart."),
            BotStartedSpeakingFrame(),
            BotStoppedSpeakingFrame(),
        ]
    )
    (turn,) = turns
    assert turn.status == "completed"
    assert turn.user_text == "Show me a bar chart of monthly sales, January 10, February 20."
    assert turn.latency.answer is not None


async def test_an_answer_that_follows_a_reply_still_playing_at_the_turn_end_closes_the_record():
    """The user went on before the tool's sentence was heard, that sentence began to play
    while they spoke, and the answer to the whole request followed it with no pause: the
    bot started speaking only once, before the turn ended."""
    turns = await recorded_turns(
        [
            *_fragment("Show me a bar chart of monthly sales."),
            UserStartedSpeakingFrame(),
            InterruptionFrame(),
            BotStartedSpeakingFrame(),  # the unheard reply's audio, while the user speaks
            TranscriptionFrame("Stop. What is the capital of France?", "user", ""),
            VADUserStoppedSpeakingFrame(stop_secs=0.0),
            UserStoppedSpeakingFrame(),
            LLMTextFrame("Paris."),
            BotStoppedSpeakingFrame(),
        ]
    )
    (turn,) = turns
    assert turn.status == "completed"


async def test_speaking_over_a_heard_answer_is_still_a_barge_in():
    turns = await recorded_turns(
        [
            *_fragment("Tell me a long story."),
            BotStartedSpeakingFrame(),
            *_fragment("Stop."),
            BotStartedSpeakingFrame(),
            BotStoppedSpeakingFrame(),
        ]
    )
    assert [t.status for t in turns] == ["interrupted", "completed"]
    assert [t.user_text for t in turns] == ["Tell me a long story.", "Stop."]


# --- the turn end waits for a request whose words say it goes on ------------------------------


class _AlwaysComplete(BaseTurnAnalyzer):
    """A turn model that hears every pause as the end of the turn (Smart Turn, mid-request)."""

    @property
    def speech_triggered(self) -> bool:
        return False

    @property
    def params(self) -> BaseTurnParams:
        return BaseTurnParams()

    def append_audio(self, buffer: bytes, is_speech: bool) -> EndOfTurnState:
        return EndOfTurnState.INCOMPLETE

    async def analyze_end_of_turn(self):
        return EndOfTurnState.COMPLETE, None

    def clear(self):
        pass


def _said(text: str, *, gap: float, whole: bool = False) -> list:
    transcript = RequestTranscriptionFrame if whole else TranscriptionFrame
    return [
        VADUserStartedSpeakingFrame(),
        transcript(text, "user", "", finalized=True),
        VADUserStoppedSpeakingFrame(stop_secs=0.2),
        SleepFrame(sleep=gap),
    ]


def _aggregator(
    context: LLMContext,
    start: list,
    *,
    turn_analyzer: BaseTurnAnalyzer,
    hold_secs: float,
    question_secs: float = 0.0,
) -> RequestUserAggregator:
    """The pipeline's user aggregator with the measured stop strategy around `turn_analyzer`."""
    strategy = MeasuredTurnAnalyzerStopStrategy(
        turn_analyzer=turn_analyzer,
        goes_on=request_goes_on,
        is_whole=request_is_whole,
        hold_secs=hold_secs,
        question_secs=question_secs,
    )
    return RequestUserAggregator(
        context, params=LLMUserAggregatorParams(user_turn_strategies=UserTurnStrategies(start=start, stop=[strategy]))
    )


async def _requests_sent(
    parts: list[tuple[str, float]],
    hold_secs: float,
    context: LLMContext | None = None,
    *,
    turn_analyzer: BaseTurnAnalyzer | None = None,
    question_secs: float = 0.0,
) -> list[str]:
    """The user turns the pipeline's aggregator ends for `parts` (text, pause after it); a part
    whose text starts with "+" is a transcript of the whole request so far."""
    aggregator = _aggregator(
        context or LLMContext(),
        [VADUserTurnStartStrategy()],
        turn_analyzer=turn_analyzer or _AlwaysComplete(),
        hold_secs=hold_secs,
        question_secs=question_secs,
    )
    ended = []

    @aggregator.event_handler("on_user_turn_stopped")
    async def on_user_turn_stopped(_aggregator, strategy, message):
        if strategy is not None:  # not the aggregation flushed as the pipeline ends
            ended.append(message.content)

    frames = [
        frame for text, gap in parts for frame in _said(text.removeprefix("+"), gap=gap, whole=text.startswith("+"))
    ]
    await run_test(aggregator, frames_to_send=frames)
    return ended  # the turns the strategy ended (not the aggregation flushed at the end)


async def test_a_pause_after_a_chart_request_with_no_numbers_yet_does_not_end_the_turn():
    sent = await _requests_sent(
        [("Show me a bar chart of monthly sales.", 0.25), ("January 10, February 20, March 30.", 0.6)],
        hold_secs=0.4,
    )
    assert sent == ["Show me a bar chart of monthly sales. January 10, February 20, March 30."]


async def test_a_finished_question_is_not_held():
    sent = await _requests_sent([("What is the capital of France?", 0.1)], hold_secs=5.0)
    assert sent == ["What is the capital of France?"]  # well before the 5 s hold
    held = await _requests_sent([("Is this review positive?", 0.1)], hold_secs=5.0)
    assert held == []  # still waiting for the review


# --- a finished question that Smart Turn hears as unfinished ----------------------------------


class _NeverComplete(_AlwaysComplete):
    """A turn model that hears every pause as mid-turn (Smart Turn on a flat voice's question);
    its silence fallback never comes in these tests."""

    async def analyze_end_of_turn(self):
        verdict = TurnMetricsData(processor="turn", is_complete=False, probability=0.2, e2e_processing_time_ms=5.0)
        return EndOfTurnState.INCOMPLETE, verdict


@pytest.mark.parametrize(
    "text, ends",
    [
        ("What time is it?", True),
        ("Show me a bar chart of monthly sales.", False),  # no question: Smart Turn decides
        ("Is this review positive?", False),  # its words say the review is still to come
        ("Is this review positive, the food was cold and the waiter was rude.", True),
        ("I absolutely love this new phone, it makes me so happy.", False),  # no judgement asked
        ("Is this review positive: the food was cold and", False),
    ],
)
async def test_a_finished_question_ends_soon_though_smart_turn_hears_it_unfinished(text, ends):
    sent = await _requests_sent([(text, 0.6)], hold_secs=0.8, turn_analyzer=_NeverComplete(), question_secs=0.3)
    assert sent == ([text] if ends else [])


async def test_the_question_rule_is_off_at_zero_and_waits_for_speech_that_goes_on():
    off = await _requests_sent([("What time is it?", 0.6)], hold_secs=0.8, turn_analyzer=_NeverComplete())
    assert off == []
    # Speaking again within the wait keeps one turn, which ends after the last question.
    parts = [("Can you hear me?", 0.1), ("What is the capital of France?", 0.6)]
    sent = await _requests_sent(parts, hold_secs=0.8, turn_analyzer=_NeverComplete(), question_secs=0.3)
    assert sent == ["Can you hear me? What is the capital of France?"]


# --- a transcript of the whole request replaces its parts -----------------------------------


async def test_a_whole_request_transcript_replaces_the_parts_of_its_turn():
    context = LLMContext()
    sent = await _requests_sent(
        [
            ("Show me a bar chart of monthly sales.", 0.25),
            ("+Show me a bar chart of monthly sales: January 10, February 20.", 0.6),
        ],
        hold_secs=0.4,
        context=context,
    )
    assert sent == ["Show me a bar chart of monthly sales: January 10, February 20."]
    assert context.get_messages() == [user(sent[0])]


async def test_a_whole_request_transcript_replaces_parts_left_by_unheard_replies():
    heard = [user("Hi."), {"role": "assistant", "content": "Hello!"}]
    context = LLMContext(messages=[*heard, user("Show me a bar chart of monthly sales."), CALL, RESULT])
    whole = "Show me a bar chart of monthly sales: January 10, February 20."
    await _requests_sent([("+" + whole, 0.3)], hold_secs=0.4, context=context)
    assert context.get_messages() == [*heard, user(whole)]


async def test_a_plain_transcript_after_an_answer_is_a_new_request():
    heard = [user("What time is it?"), {"role": "assistant", "content": "It is noon."}]
    context = LLMContext(messages=list(heard))
    await _requests_sent([("And in Paris?", 0.3)], hold_secs=0.4, context=context)
    assert context.get_messages() == [*heard, user("And in Paris?")]


# --- what starts a turn ---------------------------------------------------------------------


async def test_an_interim_arriving_after_its_turn_ended_starts_no_turn():
    """The STT's interim for the user's first pause can arrive just after the final that ended
    the turn; a turn started by it has no speech and would interrupt the answer. A final
    transcript with no speech heard (soft speech the VAD missed) still starts one."""
    aggregator = _aggregator(LLMContext(), turn_start_strategies(), turn_analyzer=_AlwaysComplete(), hold_secs=0.0)
    started = []

    @aggregator.event_handler("on_user_turn_started")
    async def on_user_turn_started(_aggregator, strategy):
        started.append(type(strategy).__name__)

    late_interim = [InterimTranscriptionFrame("What time is", "user", ""), SleepFrame(sleep=0.3)]
    await run_test(aggregator, frames_to_send=[*_said("What time is it?", gap=0.3), *late_interim])
    assert started == ["VADUserTurnStartStrategy"]

    started.clear()
    soft = [TranscriptionFrame("What time is it?", "user", "", finalized=True), SleepFrame(sleep=0.1)]
    await run_test(aggregator, frames_to_send=soft)
    assert started == ["TranscriptionUserTurnStartStrategy"]
