"""The shared turn models (bot/turn_models/) behave as Pipecat's per-session ones: the batched
Silero VAD scores as Pipecat's own, ends an utterance at its length limit, and the shared
Smart Turn model judges as Pipecat's own."""

import numpy as np
import pytest

pytestmark = pytest.mark.model


async def _vad_trace(analyzer, pcm: bytes) -> tuple[list, list[float]]:
    """VAD states per 20 ms frame and the model's confidence per window, fed as the server does."""
    analyzer.set_sample_rate(16000)
    confidences: list[float] = []
    score = analyzer.voice_confidence

    def scored(window):  # Pipecat's analyzer returns a one-element array, the shared one a float
        confidences.append(float(np.ravel(score(window))[0]))
        return confidences[-1]

    analyzer.voice_confidence = scored
    states = [await analyzer.analyze_audio(pcm[i : i + 640]) for i in range(0, len(pcm), 640)]
    return states, confidences


async def test_shared_batched_vad_scores_as_pipecats_own():
    import asyncio

    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.audio.vad.vad_analyzer import VADParams, VADState

    from bot.turn_models import SharedSileroVADAnalyzer, silero_batcher
    from client.speech import speech_pcm

    clips = [
        speech_pcm("Who wrote the play Romeo and Juliet?") + bytes(32000),
        speech_pcm("Please tell me what bees make.") + bytes(48000),
    ]
    alone = [await _vad_trace(SileroVADAnalyzer(params=VADParams()), clip) for clip in clips]
    # Both streams at once, so their windows share batches.
    together = await asyncio.gather(
        *(_vad_trace(SharedSileroVADAnalyzer(batcher=silero_batcher(), params=VADParams()), c) for c in clips)
    )
    for (states, confidences), (shared_states, shared_confidences) in zip(alone, together):
        assert VADState.SPEAKING in states
        assert shared_states == states
        assert shared_confidences == pytest.approx(confidences, abs=1e-5)


async def test_an_utterance_past_the_limit_ends_there_and_the_next_begins():
    from pipecat.audio.vad.vad_analyzer import VADParams, VADState

    from bot.turn_models import SharedSileroVADAnalyzer, silero_batcher
    from client.speech import speech_pcm

    # Three sentences without a pause long enough to stop the VAD (0.8 s of stop delay).
    speech = speech_pcm(
        "The quick brown fox jumps over the lazy dog and keeps on running through the "
        "long green field until the sun goes down behind the hills."
    )
    limit = 1.5
    params = VADParams(stop_secs=0.8)
    uncapped, _ = await _vad_trace(
        SharedSileroVADAnalyzer(batcher=silero_batcher(), params=params, max_utterance_secs=60), speech
    )
    capped, _ = await _vad_trace(
        SharedSileroVADAnalyzer(batcher=silero_batcher(), params=params, max_utterance_secs=limit), speech
    )

    def utterances(states) -> list[float]:
        """The length in seconds of each run of speech (SPEAKING or STOPPING), 20 ms a state."""
        runs, run = [], 0
        for state in [*states, VADState.QUIET]:
            if state in (VADState.SPEAKING, VADState.STOPPING):
                run += 1
            elif run:
                runs.append(run * 0.02)
                run = 0
        return runs

    assert len(utterances(uncapped)) == 1 and utterances(uncapped)[0] > 2 * limit
    capped_runs = utterances(capped)
    assert len(capped_runs) >= 2  # ended at the limit, then the speech went on as the next
    assert all(run <= limit + 0.02 for run in capped_runs), capped_runs
    assert sum(capped_runs) > 2 * limit  # nothing after the cut was lost to a dead VAD


async def test_shared_smart_turn_judges_as_pipecats_own():
    from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

    from bot.turn_models import SharedSmartTurnAnalyzer, smart_turn_model
    from client.speech import speech_pcm

    audio = np.frombuffer(speech_pcm("What is the capital of France?"), np.int16).astype(np.float32) / 32768
    own, shared = LocalSmartTurnAnalyzerV3(), SharedSmartTurnAnalyzer(model=smart_turn_model())
    for analyzer in (own, shared):
        analyzer.set_sample_rate(16000)
    expected, got = own._predict_endpoint(audio), shared._predict_endpoint(audio)
    assert got["prediction"] == expected["prediction"] == 1
    assert got["probability"] == pytest.approx(expected["probability"], abs=1e-4)
    assert shared._model_executor is smart_turn_model().executor
