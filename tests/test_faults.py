"""Fault recovery through the real server on loopback, one test per fault kind.

Each fault is injected without touching the product's code: into the cloud providers' fakes
(`tests/fakes/`: an HTTP 500, a stream that stops without closing, a closed or silent
WebSocket) for a server whose every stage is a cloud service pointed at them, and through
`AGENT_BENCHMARK_FAULTS` for the benchmark providers' local exceptions and hangs. After a
spoken turn that fails, the client hears the apology and gets an RTVI error, the session's
record shows the turn failed with its stage and reason, and the next turn is answered.
"""

import asyncio
import json
import sqlite3
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import pytest
from fakes.deepgram_server import FakeDeepgram
from fakes.elevenlabs_server import FakeElevenLabs
from fakes.openai_server import Failure, FakeOpenAI, Rule, Stall, Text
from helpers import TURN_TIMEOUT, is_turn_metrics

from bot.providers.benchmark.services import BENCHMARK_REPLY
from bot.records import SessionRecord
from bot.settings import Settings
from bot.store import create_store
from client.server_process import start_server, stop_server
from client.speech import speech_pcm
from client.ws import VoiceClient

QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."
APOLOGY = Settings.model_fields["apology"].default
# Short stage timeouts, still several times what these fakes and benchmark stages take.
TIMEOUTS = {
    "AGENT_STT_TIMEOUT_SECS": "2.5",
    "AGENT_LLM_TIMEOUT_SECS": "4",
    "AGENT_TTS_TIMEOUT_SECS": "2.5",
}
OUT_RATE = 24000


@dataclass
class Fakes:
    openai: FakeOpenAI
    deepgram: FakeDeepgram
    elevenlabs: FakeElevenLabs


@pytest.fixture(scope="module")
def fakes():
    with FakeOpenAI() as openai, FakeDeepgram() as deepgram, FakeElevenLabs() as elevenlabs:
        openai.script(Rule("answer", lambda body: True, Text(ANSWER)))
        yield Fakes(openai, deepgram, elevenlabs)


@pytest.fixture(scope="module")
def cloud_server(tmp_path_factory, fakes):
    """Every stage a cloud service, each pointed at its fake."""
    speech_pcm(QUESTION)  # synthesize before the clock matters
    process, url = start_server(
        tmp_path_factory.mktemp("faults") / "server.log",
        DEEPGRAM_API_KEY="test-key",
        OPENAI_API_KEY="test-key",
        ELEVENLABS_API_KEY="test-key",
        AGENT_STT_PROVIDER="deepgram",
        AGENT_LLM_PROVIDER="openai",
        AGENT_TTS_PROVIDER="elevenlabs",
        AGENT_DEEPGRAM_URL=fakes.deepgram.url,
        AGENT_OPENAI_BASE_URL=f"{fakes.openai.url}/v1",
        AGENT_ELEVENLABS_URL=fakes.elevenlabs.url,
        **TIMEOUTS,
    )
    yield url
    stop_server(process)


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


async def _ready(client: VoiceClient) -> None:
    """Connect and hear the greeting out, as a user would before speaking (an empty user turn
    before the bot's first words would have Pipecat ask the user to repeat, on top of the
    apology)."""
    await client.ready()
    await client.wait_for(lambda m: m.type == "bot-stopped-speaking", TURN_TIMEOUT)


async def _turn(client: VoiceClient) -> tuple[float, dict, float]:
    """Speak the question; (end of speech, its turn record, when the bot stopped speaking)."""
    speech_end = await client.say(speech_pcm(QUESTION))
    turn = (await client.wait_for(is_turn_metrics, TURN_TIMEOUT, after=speech_end)).data["turn"]
    stopped = await client.wait_for(lambda m: m.type == "bot-stopped-speaking", TURN_TIMEOUT, after=speech_end)
    # Pipecat's user turn (Smart Turn, or its 5 s timeout when no transcript came) must be
    # over before the next one can start.
    await client.wait_for(lambda m: m.type == "user-stopped-speaking", TURN_TIMEOUT, after=speech_end)
    return speech_end, turn, stopped.at


async def _fails_then_recovers(client: VoiceClient, http_url: str, stage: str, kind: str, answer: str) -> dict:
    """One failed turn, checked whole, then one answered turn; returns the failed record."""
    apology_seconds = len(speech_pcm(APOLOGY, OUT_RATE)) / 2 / OUT_RATE
    speech_end, failed, stopped = await _turn(client)

    assert failed["status"] == "failed", failed
    assert failed["failure"]["stage"] == stage and failed["failure"]["kind"] == kind, failed
    assert failed["failure"]["message"] and stage in failed["error"], failed
    # The client is told, and hears the apology: only it, as the answer was never spoken.
    error = await client.wait_for(lambda m: m.type == "error", 1, after=speech_end)
    assert error.data.get("error"), error.message
    heard = client.voiced_audio_seconds(speech_end, stopped)
    assert 0.6 * apology_seconds <= heard <= apology_seconds + 0.5, (heard, apology_seconds)

    # The next turn is answered as if nothing had happened.
    speech_end, answered, stopped = await _turn(client)
    assert answered["status"] == "completed", answered
    assert answered["index"] == failed["index"] + 1
    assert answer.lower() in answered["bot_text"].lower(), answered
    assert client.voiced_audio_seconds(speech_end, stopped) >= 0.5

    record = await asyncio.to_thread(_get_json, f"{http_url}/api/sessions/{failed['session_id']}")
    stored = {turn["index"]: turn for turn in record["turns"]}
    assert stored[failed["index"]]["status"] == "failed"
    assert stored[failed["index"]]["failure"] == failed["failure"]
    assert stored[answered["index"]]["status"] == "completed"
    return failed


async def _session_fails_then_recovers(http_url: str, inject: Callable[[], None], stage: str, kind: str) -> dict:
    """A new session; once greeted, `inject` arms the fault for its first turn."""
    async with VoiceClient(http_url.replace("http://", "ws://") + "/ws") as client:
        await _ready(client)
        inject()
        failed = await _fails_then_recovers(client, http_url, stage, kind, ANSWER)
    # Once the session has ended its record is read back from the SQLite store.
    url = f"{http_url}/api/sessions/{failed['session_id']}"
    for _ in range(100):
        record = await asyncio.to_thread(_get_json, url)
        if record["state"] == "ended":
            break
        await asyncio.sleep(0.1)
    assert record["state"] == "ended", record["state"]
    [stored] = [turn for turn in record["turns"] if turn["index"] == failed["index"]]
    assert stored["status"] == "failed" and stored["failure"] == failed["failure"], stored
    return failed


@pytest.mark.unit
async def test_turns_stored_before_failures_were_classified_read_back(tmp_path):
    """A turn row written before `failure` existed still loads: failed, with no failure."""
    old_turn = {"turn_id": "t1", "session_id": "s1", "index": 1, "status": "failed", "error": "boom"}
    path = tmp_path / "records.sqlite3"
    store = create_store(path)
    await store.open()
    try:
        await store.save_session(SessionRecord(session_id="s1", transport="websocket", started_at=1.0))
        with sqlite3.connect(path) as conn:
            conn.execute("INSERT INTO turns VALUES ('s1', 1, 0.0, ?)", (json.dumps(old_turn),))
        [turn] = (await store.get_session("s1")).turns
    finally:
        await store.close()
    assert turn.status == "failed" and turn.error == "boom" and turn.failure is None


# --- cloud providers, faults injected into their fakes -------------------------------------------


def _assert_replaced(connections: list, before: int) -> None:
    """The session's first connection (opened after `before` others) was closed, and the
    answer came over another."""
    assert connections[before].closed_at is not None
    assert len(connections) >= before + 2


@pytest.mark.e2e
async def test_llm_http_500(cloud_server, fakes):
    fakes.openai.requests.clear()
    # The openai SDK retries a 5xx twice: a lasting outage fails three requests.
    inject = partial(fakes.openai.inject, Failure(500), times=3)
    failed = await _session_fails_then_recovers(cloud_server, inject, "llm", "error")
    assert "500" in failed["failure"]["message"], failed
    rules = [r.rule for r in fakes.openai.completions()]
    assert rules == ["injected Failure"] * 3 + ["answer"], rules


@pytest.mark.e2e
async def test_llm_stream_that_hangs(cloud_server, fakes):
    fakes.openai.requests.clear()
    inject = partial(fakes.openai.inject, Stall("Let me"))
    failed = await _session_fails_then_recovers(cloud_server, inject, "llm", "timeout")
    assert failed["failure"]["message"] == "no token within 4s", failed
    assert [r.rule for r in fakes.openai.completions()] == ["injected Stall", "answer"]


@pytest.mark.e2e
async def test_stt_stream_closed_with_an_error(cloud_server, fakes):
    before = len(fakes.deepgram.connections)
    inject = partial(fakes.deepgram.inject, "error")
    failed = await _session_fails_then_recovers(cloud_server, inject, "stt", "error")
    assert failed["user_text"] == ""
    _assert_replaced(fakes.deepgram.connections, before)


@pytest.mark.e2e
async def test_stt_stream_that_hangs(cloud_server, fakes):
    """The stream stays silent for good: the session replaces the connection after the
    failed turn, and the next turn is transcribed over the new one."""
    before = len(fakes.deepgram.connections)
    inject = partial(fakes.deepgram.inject, "hang")
    failed = await _session_fails_then_recovers(cloud_server, inject, "stt", "timeout")
    assert failed["failure"]["message"] == "no final transcript within 2.5s", failed
    _assert_replaced(fakes.deepgram.connections, before)


@pytest.mark.e2e
async def test_tts_socket_closed_with_an_error(cloud_server, fakes):
    inject = partial(fakes.elevenlabs.inject, "error")
    failed = await _session_fails_then_recovers(cloud_server, inject, "tts", "error")
    # Pipecat reconnects and reports the answer's audio context, lost with the socket.
    assert "completed with no audio" in failed["failure"]["message"], failed
    assert any(c.close_code == 1011 for c in fakes.elevenlabs.connections)


@pytest.mark.e2e
async def test_tts_that_never_answers(cloud_server, fakes):
    inject = partial(fakes.elevenlabs.inject, "hang")
    failed = await _session_fails_then_recovers(cloud_server, inject, "tts", "timeout")
    assert failed["failure"]["message"] == "no audio within 2.5s", failed
    contexts = [c for connection in fakes.elevenlabs.connections for c in connection.contexts.values()]
    hung = [c for c in contexts if c.text and not c.spoken]
    assert hung and "paris" in hung[-1].text.lower(), hung


@pytest.mark.e2e
async def test_tts_socket_that_stalls(cloud_server, fakes):
    """The socket stops answering anything: the session replaces it after the failed turn,
    and the next answer is spoken over the new one."""
    before = len(fakes.elevenlabs.connections)
    inject = partial(fakes.elevenlabs.inject, "stall")
    failed = await _session_fails_then_recovers(cloud_server, inject, "tts", "timeout")
    assert failed["failure"]["message"] == "no audio within 2.5s", failed
    _assert_replaced(fakes.elevenlabs.connections, before)


# --- local models: the benchmark providers' injected exceptions and hangs ------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("stage", ["stt", "llm", "tts"])
async def test_local_stage_exception_then_hang(tmp_path, stage):
    """The stage raises in the session's first turn and hangs in its third."""
    process, url = await asyncio.to_thread(
        start_server,
        tmp_path / "server.log",
        AGENT_STT_PROVIDER="benchmark",
        AGENT_LLM_PROVIDER="benchmark",
        AGENT_TTS_PROVIDER="benchmark",
        AGENT_BENCHMARK_FAULTS=f"{stage}:error@1,{stage}:hang@3",
        **TIMEOUTS,
    )
    try:
        async with VoiceClient(url.replace("http://", "ws://") + "/ws") as client:
            await _ready(client)
            failed = await _fails_then_recovers(client, url, stage, "error", BENCHMARK_REPLY)
            assert failed["index"] == 1
            assert f"benchmark fault: {stage.upper()} error in turn 1" in failed["failure"]["message"]
            failed = await _fails_then_recovers(client, url, stage, "timeout", BENCHMARK_REPLY)
            assert failed["index"] == 3
    finally:
        await asyncio.to_thread(stop_server, process)
