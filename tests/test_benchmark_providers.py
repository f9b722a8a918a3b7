"""The benchmark providers through the real server: fixed delays, the fixed reply as a tone,
no model loaded for them, and injected faults."""

import asyncio
import json
import urllib.request

import pytest
from helpers import TURN_TIMEOUT, is_turn_metrics

from bot.providers.benchmark.services import BENCHMARK_REPLY, SECONDS_PER_CHARACTER
from client.server_process import start_server, stop_server
from client.speech import speech_pcm
from client.ws import BotAudio, VoiceClient

DELAYS_MS = {"stt": 300, "llm": 500, "tts": 400}
BENCHMARK_ENV = {
    "AGENT_STT_PROVIDER": "benchmark",
    "AGENT_LLM_PROVIDER": "benchmark",
    "AGENT_TTS_PROVIDER": "benchmark",
    **{f"AGENT_BENCHMARK_{stage.upper()}_DELAY_MS": str(ms) for stage, ms in DELAYS_MS.items()},
}


@pytest.fixture(scope="module")
def benchmark_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("benchmark") / "server.log"
    process, url = start_server(log, **BENCHMARK_ENV, AGENT_BENCHMARK_FAULTS="llm:error@2,tts:hang@3")
    yield url
    stop_server(process)


async def _speak_turn(client: VoiceClient, text: str):
    speech_end = await client.say(speech_pcm(text))
    message = await client.wait_for(is_turn_metrics, TURN_TIMEOUT, after=speech_end)
    return speech_end, message.data["turn"]


@pytest.mark.e2e
async def test_no_model_is_loaded_for_benchmark_stages(benchmark_server):
    with urllib.request.urlopen(f"{benchmark_server}/health", timeout=10) as response:
        health = json.load(response)
    assert health["model_load_seconds"] == {}
    assert health["models"] == {"stt": None, "llm": None, "tts": None}


@pytest.mark.e2e
async def test_turns_get_the_benchmark_reply_delays_and_faults(benchmark_server):
    ws_url = benchmark_server.replace("http://", "ws://") + "/ws"
    async with VoiceClient(ws_url) as client:
        await client.ready()
        await client.wait_for(lambda m: m.type == "bot-stopped-speaking", TURN_TIMEOUT)

        # Turn 1: answered, each configured delay visible in the turn's milestones.
        speech_end, turn = await _speak_turn(client, "What is the capital of France?")
        assert turn["status"] == "completed", turn
        assert turn["user_text"].startswith("Benchmark utterance 1, ")
        assert turn["bot_text"] == BENCHMARK_REPLY
        assert all(p.startswith("benchmark (fixed delays):") for p in turn["providers"].values())
        milestones = turn["latency"]["milestones"]
        assert milestones["turn_end"] - milestones["vad_stop"] >= DELAYS_MS["stt"] / 1000 - 0.05
        assert milestones["llm_first_token"] - milestones["turn_end"] >= DELAYS_MS["llm"] / 1000
        assert milestones["tts_first_audio"] - milestones["llm_first_token"] >= DELAYS_MS["tts"] / 1000
        # Real-length audio for the reply, a tone loud enough to count as voiced.
        expected_seconds = len(BENCHMARK_REPLY) * SECONDS_PER_CHARACTER
        await client.wait_for(lambda m: m.type == "bot-stopped-speaking", TURN_TIMEOUT, after=speech_end)
        assert client.voiced_audio_seconds(speech_end) >= expected_seconds - 0.2
        assert client.playback_stall_seconds(speech_end) < 0.1  # it played without a gap
        assert client.audio[-1].sample_rate == 24000

        # Turn 2: the LLM fails the way a provider does: an error, the turn marked failed
        # (whatever the server then says about it, the benchmark reply is not spoken).
        speech_end, turn = await _speak_turn(client, "Who wrote Romeo and Juliet?")
        assert turn["status"] == "failed"
        assert "benchmark fault: LLM error in turn 2" in turn["error"]
        assert BENCHMARK_REPLY not in turn["bot_text"]

        # Turn 3: the TTS never answers; the user goes on before any answer was heard, so what
        # they said since is one request, answered once (no "interrupted" record for its part).
        await client.say(speech_pcm("How many legs does a spider have?"))
        await asyncio.sleep(2)
        speech_end = await client.say(speech_pcm("Which ocean is the biggest?"))
        message = await client.wait_for(lambda m: is_turn_metrics(m) and m.data["turn"]["index"] == 3, TURN_TIMEOUT)
        turn = message.data["turn"]
        assert turn["status"] == "completed" and turn["bot_text"] == BENCHMARK_REPLY, turn
        assert turn["user_text"].count("Benchmark utterance") == 2, turn["user_text"]
        assert client.voiced_audio_seconds(speech_end) > 0
        await asyncio.sleep(1)
        assert not [m for m in client.messages if is_turn_metrics(m) and m.data["turn"]["index"] > 3]


@pytest.mark.unit
def test_playback_stall_is_the_time_audio_arrived_after_the_audio_before_it_had_played():
    client = VoiceClient("ws://unused")
    tenth_of_a_second = bytes(2 * 2400)  # 24 kHz s16
    # Sent ahead of real time, then a chunk 0.3 s late, then one 0.05 s late.
    for at in (10.0, 10.05, 10.1, 10.6, 10.75):
        client.audio.append(BotAudio(at, tenth_of_a_second, 24000))
    assert client.playback_stall_seconds(10.0) == pytest.approx(0.3 + 0.05)
    assert client.playback_stall_seconds(10.0, end=10.2) == 0.0
    assert client.playback_stall_seconds(11.0) == 0.0


@pytest.mark.e2e
def test_a_bad_fault_setting_stops_the_server_naming_it(tmp_path):
    with pytest.raises(RuntimeError, match="AGENT_BENCHMARK_FAULTS"):
        start_server(tmp_path / "server.log", **BENCHMARK_ENV, AGENT_BENCHMARK_FAULTS="llm:explode@1")


@pytest.mark.unit
def test_benchmark_is_chosen_only_by_name_and_named_as_such(monkeypatch, tmp_path):
    from bot.providers import EmbeddedEngines, create_service, describe_providers
    from bot.providers.benchmark.services import BenchmarkLLMService, BenchmarkSTTService, BenchmarkTTSService
    from bot.settings import Provider, Settings

    monkeypatch.chdir(tmp_path)  # no .env
    for stage in ("STT", "LLM", "TTS"):
        monkeypatch.delenv(f"AGENT_{stage}_PROVIDER", raising=False)
    assert Provider.BENCHMARK not in {Settings().resolved(s) for s in ("stt", "llm", "tts")}

    monkeypatch.setenv("AGENT_LLM_PROVIDER", "benchmark")
    monkeypatch.setenv("AGENT_BENCHMARK_LLM_DELAY_MS", "250")
    settings = Settings()
    assert type(create_service(settings, "llm", EmbeddedEngines())) is BenchmarkLLMService
    assert describe_providers(settings)["llm"] == "benchmark (fixed delays):250ms"
    assert not describe_providers(settings)["stt"].startswith("benchmark")

    for stage in ("STT", "TTS"):
        monkeypatch.setenv(f"AGENT_{stage}_PROVIDER", "benchmark")
    settings = Settings()
    assert type(create_service(settings, "stt", EmbeddedEngines())) is BenchmarkSTTService
    assert type(create_service(settings, "tts", EmbeddedEngines())) is BenchmarkTTSService


@pytest.mark.unit
def test_fault_list_parses_each_entry():
    from bot.settings import BenchmarkFault, parse_benchmark_faults

    assert parse_benchmark_faults(" llm:error@1, tts:hang@12 ,") == (
        BenchmarkFault("llm", "error", 1),
        BenchmarkFault("tts", "hang", 12),
    )
    for bad in ("llm:error", "llm@1", "asr:error@1", "llm:error@0", "llm:error@x"):
        with pytest.raises(ValueError, match="AGENT_BENCHMARK_FAULTS"):
            parse_benchmark_faults(bad)


@pytest.mark.e2e
async def test_the_default_log_level_keeps_conversations_out_of_the_log(tmp_path):
    """AGENT_LOG_LEVEL=INFO (the default): a whole turn leaves no DEBUG line in the server's
    log, so neither what the user said nor the answer is written there."""
    log = tmp_path / "server.log"
    process, url = start_server(log, **BENCHMARK_ENV, AGENT_LOG_LEVEL="INFO")
    try:
        async with VoiceClient(url.replace("http://", "ws://") + "/ws") as client:
            await client.ready()
            await client.wait_for(lambda m: m.type == "bot-stopped-speaking", TURN_TIMEOUT)
            _, turn = await _speak_turn(client, "What is the capital of France?")
            assert turn["status"] == "completed", turn
    finally:
        stop_server(process)
    text = log.read_text(errors="replace")
    assert "Uvicorn running" in text or "Application startup complete" in text, text[-2000:]
    assert "| DEBUG" not in text, [line for line in text.splitlines() if "| DEBUG" in line][:5]
    assert turn["user_text"] not in text and BENCHMARK_REPLY not in text
