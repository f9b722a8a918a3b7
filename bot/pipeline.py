"""One session's voice pipeline, top to bottom as the audio flows."""

from collections.abc import Awaitable, Callable

from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import Frame, InputAudioRawFrame, TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregatorParams
from pipecat.processors.filters.function_filter import FunctionFilter
from pipecat.processors.frameworks.rtvi.observer import (
    RTVIFunctionCallReportLevel,
    RTVIObserverParams,
)
from pipecat.transports.base_transport import BaseTransport
from pipecat.turns.user_start import (
    BaseUserTurnStartStrategy,
    TranscriptionUserTurnStartStrategy,
    VADUserTurnStartStrategy,
)
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from bot.audio_rates import AUDIO_IN_RATE, AUDIO_OUT_RATE
from bot.limits import ClientAllowance
from bot.observers.lean_worker import LeanPipelineWorker
from bot.observers.turn_recorder import EngineStage, TurnRecorder
from bot.processors.client_message_check import CheckedRTVIProcessor
from bot.processors.context_window import ContextWindow
from bot.processors.fault_recovery import FaultRecovery, StageTimeouts
from bot.processors.reply_aggregator import HeardReplyAggregator
from bot.processors.reply_hold import ReplyHold
from bot.processors.request_aggregator import RequestUserAggregator
from bot.processors.request_merge import RequestMerge
from bot.processors.request_transcript import RequestTranscriptMessages
from bot.processors.speculative_prefill import SpeculativePrefill
from bot.processors.speech_pause import SpeechPauseVADProcessor
from bot.processors.tool_result_speech import ToolResultSpeech
from bot.processors.unheard_reply import UnheardReplyCheck
from bot.processors.visualization import VisualizationProcessor
from bot.providers import EmbeddedEngines, create_service, describe_providers, embedded_threads
from bot.records import TurnRecord
from bot.session_resources import SessionResources
from bot.settings import ResultSpeaker, Settings
from bot.tools import ALL_TOOLS, request_goes_on, request_is_whole
from bot.turn_models import create_turn_stop_strategy, create_vad_analyzer


async def _is_not_microphone_audio(frame: Frame) -> bool:
    return not isinstance(frame, InputAudioRawFrame)


def turn_start_strategies() -> list[BaseUserTurnStartStrategy]:
    # A final transcript still starts a turn the VAD missed (soft speech). An interim does not:
    # the STT's interim for the user's first pause can arrive just after the final that ended
    # the turn, and a turn started by it has no speech, so it waits out Pipecat's stop timeout
    # and then interrupts the answer to the request it belonged to.
    return [
        VADUserTurnStartStrategy(enable_interruptions=True),
        TranscriptionUserTurnStartStrategy(use_interim=False),
    ]


def turn_strategies(settings: Settings) -> UserTurnStrategies:
    stop = (
        create_turn_stop_strategy(settings, goes_on=request_goes_on, is_whole=request_is_whole)
        if settings.smart_turn
        else SpeechTimeoutUserTurnStopStrategy()
    )
    return UserTurnStrategies(start=turn_start_strategies(), stop=[stop])


def build_worker(
    transport: BaseTransport,
    settings: Settings,
    engines: EmbeddedEngines,
    *,
    session_id: str,
    on_turn: Callable[[TurnRecord], Awaitable[None]],
    resources: SessionResources,
    on_visualization: Callable[[dict], Awaitable[None]] | None = None,
    on_error: Callable[[str], None] | None = None,
    allowance: ClientAllowance | None = None,
    text_only: bool = False,
) -> tuple[PipelineWorker, TurnRecorder]:
    # text_only: the scripted text evals (evals/) type the user's turns and read the replies.
    stt = None if text_only else create_service(settings, "stt", engines)
    llm = create_service(settings, "llm", engines)
    tts = None if text_only else create_service(settings, "tts", engines)
    threads = embedded_threads(settings)
    tool_speech = settings.resolved_tool_result_speech() is ResultSpeaker.TOOL
    recorder = TurnRecorder(
        session_id=session_id,
        providers=describe_providers(settings),
        engines={
            service.name: EngineStage(stage, threads[stage])
            for stage, service in (("stt", stt), ("llm", llm), ("tts", tts))
            if service
        },
        on_turn=on_turn,
        on_error=on_error,
    )
    # Sends what a tool produced just before the audio of the sentence that presents it.
    visualizer = VisualizationProcessor(resources, on_visualization, turn_id=lambda: recorder.current_turn_id)

    # A stage that fails or stays silent costs one turn: apology, failed record, next turn.
    fault_recovery = FaultRecovery(
        stages={"stt": stt, "llm": llm, "tts": tts},
        timeouts=StageTimeouts(
            stt=settings.stt_timeout_secs,
            llm=settings.llm_timeout_secs,
            tts=settings.tts_timeout_secs,
        ),
        apology=engines.apology if tts else b"",  # a text-only session plays no audio
        apology_sample_rate=engines.apology_sample_rate,
        on_failure=recorder.fail,
        on_error=on_error,
    )

    # Voice activity is judged in a processor of its own, ahead of the STT, rather than inside
    # the user aggregator: waiting on the shared VAD model there, frame after frame, kept a
    # busy server's aggregator behind on microphone audio, and a transcript (a data frame)
    # waits until every queued audio frame (a system frame) has been handled.
    # It also tells the STT when the user first goes quiet, for an interim with every word.
    vad = None if text_only else SpeechPauseVADProcessor(vad_analyzer=create_vad_analyzer(settings))
    context = LLMContext(tools=ToolsSchema(standard_tools=ALL_TOOLS))
    # The embedded LLM computes the turn's prompt from the interim words while the user speaks.
    prefill = (
        SpeculativePrefill(llm, context)
        if stt and settings.llm_speculative_prefill and hasattr(llm, "prefill_user_turn")
        else None
    )
    # A transcript of a whole request, dictated with pauses, replaces its parts.
    user_aggregator = RequestUserAggregator(
        context, params=LLMUserAggregatorParams(user_turn_strategies=turn_strategies(settings))
    )
    # A reply the user went on over before they could hear it is not said (UnheardReplyCheck).
    assistant_aggregator = HeardReplyAggregator(context)

    pipeline = Pipeline(
        list(
            filter(
                None,
                [  # a text-only pipeline has no STT or TTS
                    transport.input(),
                    vad,
                    # Whether the user heard the reply they start speaking over, for everything below.
                    UnheardReplyCheck() if vad else None,
                    stt,
                    # The page shows a request transcribed again whole, and an unheard reply, as such.
                    RequestTranscriptMessages() if stt else None,
                    prefill,
                    user_aggregator,
                    # A request cut by a pause and unanswered in between reaches the LLM whole.
                    RequestMerge(),
                    ContextWindow(settings.max_context_messages),
                    # Past the turn detection nothing uses the microphone: without this, every 20 ms
                    # of it would still cross six more processors and their observers.
                    FunctionFilter(_is_not_microphone_audio, filter_system_frames=True),
                    llm,
                    # A tool's own sentence is its answer: spoken at once, without a second request.
                    ToolResultSpeech(on_result_in_context=prefill.answer_being_spoken if prefill else None)
                    if tool_speech
                    else None,
                    tts,
                    # While a voice that may be the user going on is being confirmed, the reply waits.
                    ReplyHold() if vad else None,
                    visualizer,
                    fault_recovery,
                    transport.output(),
                    assistant_aggregator,
                ],
            )
        )
    )

    if prefill is not None:

        @assistant_aggregator.event_handler("on_assistant_turn_stopped")
        async def prefill_the_answer(_aggregator, _message):
            prefill.answer_added()

    worker = LeanPipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=AUDIO_IN_RATE,
            audio_out_sample_rate=AUDIO_OUT_RATE,
            enable_metrics=True,
            enable_usage_metrics=True,
        ),
        conversation_id=session_id,
        idle_timeout_secs=None,
        enable_turn_tracking=False,  # TurnRecorder tracks turns; one observer fewer per frame
        observers=[recorder, fault_recovery.observer],
        app_resources=resources,  # what the tools may use (FunctionCallParams.app_resources)
        # Every client message, from any transport, is checked before RTVI acts on it.
        rtvi_processor=CheckedRTVIProcessor(allowance=allowance or ClientAllowance(settings), on_rejected=on_error),
        # The page shows which tool ran with which arguments: it is the user's own session.
        rtvi_observer_params=RTVIObserverParams(function_call_report_level={"*": RTVIFunctionCallReportLevel.FULL}),
    )

    if settings.greeting:

        @worker.rtvi.event_handler("on_client_ready")
        async def greet(_rtvi):
            await worker.queue_frames([TTSSpeakFrame(settings.greeting)])

    return worker, recorder
