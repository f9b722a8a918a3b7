"""Nothing recorded is lost: records survive a restart, and SIGTERM drains live sessions."""

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request

import pytest
from helpers import TURN_TIMEOUT

from client.server_process import start_server, stop_server
from client.speech import speech_pcm
from client.ws import VoiceClient

pytestmark = pytest.mark.e2e


def _session(url: str, session_id: str) -> dict:
    with urllib.request.urlopen(f"{url}/api/sessions/{session_id}", timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def store_env(tmp_path):
    return {"AGENT_STORE_PATH": str(tmp_path / "records.sqlite3")}


async def _one_turn(url: str) -> tuple[VoiceClient, dict]:
    """Connect, let the greeting play, ask one question; return the open client and the turn."""
    question = speech_pcm("What is the capital of France?")
    client = VoiceClient(url.replace("http://", "ws://") + "/ws")
    await client.__aenter__()
    await client.ready()
    await client.wait_for(lambda m: m.type == "bot-stopped-speaking", TURN_TIMEOUT)
    speech_end = await client.say(question)
    message = await client.wait_for(
        lambda m: m.type == "server-message" and m.data.get("type") == "turn-metrics",
        TURN_TIMEOUT,
        after=speech_end,
    )
    return client, message.data["turn"]


async def test_a_session_reads_back_whole_after_a_restart(tmp_path, store_env):
    process, url = start_server(tmp_path / "first.log", **store_env)
    try:
        client, turn = await _one_turn(url)
        await client.__aexit__(None, None, None)
        await asyncio.sleep(1.0)  # the session ends and its record is closed
        before = _session(url, turn["session_id"])
    finally:
        stop_server(process)

    process, url = start_server(tmp_path / "second.log", **store_env)
    try:
        after = _session(url, turn["session_id"])
    finally:
        stop_server(process)
    assert after["state"] == "ended"
    assert after["turns"] == before["turns"]
    assert after["turns"][0]["turn_id"] == turn["turn_id"]
    assert "paris" in after["turns"][0]["bot_text"].lower()


async def test_sigterm_says_goodbye_and_loses_no_completed_turn(tmp_path, store_env):
    process, url = start_server(tmp_path / "first.log", **store_env)
    try:
        client, turn = await _one_turn(url)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        # While the server drains, a newcomer is refused and told why; /health says so.
        async with VoiceClient(url.replace("http://", "ws://") + "/ws") as newcomer:
            refusal = await newcomer.wait_for(lambda m: m.type == "error", 10)
            for _ in range(50):  # bounded: 5 s
                if newcomer.closed_code is not None:
                    break
                await asyncio.sleep(0.1)
        assert "shutting down" in refusal.data["error"] and newcomer.closed_code == 1013
        with pytest.raises(urllib.error.HTTPError) as health:
            urllib.request.urlopen(f"{url}/health", timeout=10)
        assert health.value.code == 503 and json.loads(health.value.read())["status"] == "draining"
        await client.wait_for(
            lambda m: m.type == "bot-tts-text" and "goodbye" in m.data.get("text", "").lower(),
            15,
        )
        for _ in range(150):  # bounded: 15 s
            if client.closed_code is not None:
                break
            await asyncio.sleep(0.1)
        assert client.closed_code is not None, "the session was not ended"
        # bot-tts-text reports the goodbye once it has been spoken; its audio came before.
        assert client.voiced_audio_seconds(sent) > 1.0, "the goodbye was not heard"
        await client.__aexit__(None, None, None)
        # uvicorn re-raises the signal once it has shut down cleanly: exit status -SIGTERM.
        assert await asyncio.to_thread(process.wait, 30) in (0, -signal.SIGTERM)
        assert time.monotonic() - sent < 30
    finally:
        if process.poll() is None:
            stop_server(process)

    process, url = start_server(tmp_path / "second.log", **store_env)
    try:
        record = _session(url, turn["session_id"])
    finally:
        stop_server(process)
    assert record["state"] == "ended"
    assert [t["turn_id"] for t in record["turns"]] == [turn["turn_id"]]


async def test_a_killed_servers_unfinished_sessions_are_closed_as_crashed_at_its_restart(tmp_path, store_env):
    env = {**store_env, "AGENT_SERVER_ID": "server-a"}
    process, url = start_server(tmp_path / "first.log", **env)
    try:
        client, turn = await _one_turn(url)
        process.kill()  # no drain, no goodbye: the row stays "active"
        await asyncio.to_thread(process.wait, 30)
        await client.__aexit__(None, None, None)
    finally:
        if process.poll() is None:
            stop_server(process)
    process, url = start_server(tmp_path / "second.log", **env)
    try:
        record = _session(url, turn["session_id"])
    finally:
        stop_server(process)
    assert record["state"] == "ended" and record["end_reason"] == "crashed"
    assert record["ended_at"] >= turn["ended_at"] - 1e-6
