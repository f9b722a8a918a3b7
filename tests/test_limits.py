"""Session limits through the real server on loopback: one session over the maximum is refused
(RTVI error and close 1013 on /ws, 503 on /api/offer) while the admitted one goes on; an idle
session and one at its maximum duration each end with a goodbye and a record saying why.

The server has an API key here (the limits hold with auth on) and serves /metrics openly,
the setting for Prometheus scrapers."""

import asyncio
import json
import time
import urllib.error
import urllib.request

import aiohttp
import pytest
from helpers import TURN_TIMEOUT

from bot.limits import LoopLoad, SessionSlots
from client.server_process import start_server, stop_server
from client.webrtc import WebRTCPeer, loopback_only_ice
from client.ws import VoiceClient, session_token

API_KEY = "limits-test-key-0123456789"
IDLE_SECS = 8
MAX_SECS = 20
IDLE_GOODBYE = "Nobody is talking, so I am leaving. Goodbye!"
MAX_GOODBYE = "Our time is up for today. Goodbye!"
SETTINGS = {
    "AGENT_MAX_SESSIONS": "1",
    "AGENT_IDLE_TIMEOUT_SECS": str(IDLE_SECS),
    "AGENT_MAX_SESSION_SECS": str(MAX_SECS),
    "AGENT_IDLE_GOODBYE": IDLE_GOODBYE,
    "AGENT_MAX_SESSION_GOODBYE": MAX_GOODBYE,
    "AGENT_API_KEY": API_KEY,
    "AGENT_METRICS_PUBLIC": "true",
}
CLOSE_TRY_AGAIN_LATER = 1013


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process, url = start_server(tmp_path_factory.mktemp("limits") / "server.log", **SETTINGS)
    yield url
    stop_server(process)


def _get(url: str, *, key: str | None = API_KEY) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
        return json.loads(response.read())


async def _no_sessions_left(url: str) -> None:
    for _ in range(150):  # bounded: 15 s
        if _get(f"{url}/health", key=None)["active_sessions"] == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("a session from an earlier test is still active")


def _ws(url: str) -> VoiceClient:
    token = session_token(url, API_KEY)
    return VoiceClient(f"{url.replace('http://', 'ws://')}/ws?token={token}")


async def _ending(client: VoiceClient, timeout: float):
    return await client.wait_for(
        lambda m: m.type == "server-message" and m.data.get("type") == "session-ending", timeout
    )


async def _closed(client: VoiceClient) -> int:
    for _ in range(200):  # bounded: 20 s
        if client.closed_code is not None:
            return client.closed_code
        await asyncio.sleep(0.1)
    raise AssertionError("the server did not close the session")


async def _record_of(url: str, session_id: str) -> dict:
    for _ in range(100):  # bounded: 10 s
        record = _get(f"{url}/api/sessions/{session_id}")
        if record["state"] == "ended":
            return record
        await asyncio.sleep(0.1)
    raise AssertionError(f"session {session_id} never ended: {record}")


@pytest.mark.e2e
async def test_one_session_over_the_limit_is_refused_and_the_first_goes_on(server):
    loopback_only_ice()
    await _no_sessions_left(server)
    async with _ws(server) as first:
        await first.ready()

        async with _ws(server) as second:
            error = await second.wait_for(lambda m: m.type == "error", 10)
            assert "limit of 1 concurrent sessions" in error.data["error"], error.data
            assert error.data["fatal"] is True
            assert await _closed(second) == CLOSE_TRY_AGAIN_LATER

        with pytest.raises(aiohttp.ClientResponseError) as refused:
            async with WebRTCPeer(server, token=session_token(server, API_KEY)):
                pass
        assert refused.value.status == 503

        # The admitted session is untouched: still open, and its pipeline still answers.
        assert first.closed_code is None
        await first.send_raw("a text frame")
        await first.wait_for(lambda m: m.type == "error", 10)
        assert first.closed_code is None
        assert _get(f"{server}/health", key=None)["active_sessions"] == 1

    # Its slot is free again once it has gone.
    await _no_sessions_left(server)
    async with _ws(server) as again:
        await again.ready()


@pytest.mark.e2e
async def test_an_idle_session_ends_with_a_goodbye_and_its_record_says_why(server):
    await _no_sessions_left(server)
    async with _ws(server) as client:
        await client.ready()
        greeted = await client.wait_for(lambda m: m.type == "bot-stopped-speaking", TURN_TIMEOUT)
        # Nobody speaks now; the microphone streams silence, which is not activity, and a
        # client message other than typed text (refused here) is not either.
        ending = None
        for _ in range((IDLE_SECS + 15) // 2):  # bounded
            await client.send_rtvi("client-message", {"t": "still-here", "d": {}})
            try:
                ending = await _ending(client, 2.0)
                break
            except TimeoutError:
                continue
        assert ending is not None, "the session was never idle"
        assert ending.data["reason"] == "idle_timeout"
        assert ending.data["message"] == IDLE_GOODBYE
        assert ending.at - greeted.at >= IDLE_SECS - 0.5
        await client.wait_for(lambda m: m.type == "bot-tts-text" and "Goodbye" in m.data.get("text", ""), 15)
        assert await _closed(client) == 1000
    record = await _record_of(server, ending.data["session_id"])
    assert record["end_reason"] == "idle_timeout"


@pytest.mark.e2e
async def test_a_session_ends_at_its_maximum_duration_however_active(server):
    await _no_sessions_left(server)
    async with _ws(server) as client:
        started = time.monotonic()
        await client.ready()
        ending = None
        # A typed message every second keeps the session from ever being idle (kept in the
        # conversation without a reply, so nothing else runs meanwhile).
        for _ in range(MAX_SECS + 20):  # bounded
            await client.send_rtvi(
                "send-text",
                {"content": "still here", "options": {"run_immediately": False, "audio_response": False}},
            )
            try:
                ending = await _ending(client, 1.0)
                break
            except TimeoutError:
                continue
        assert ending is not None, "the session outlived its maximum duration"
        assert ending.data["reason"] == "max_duration"
        assert ending.data["message"] == MAX_GOODBYE
        assert MAX_SECS - 1 <= ending.at - started <= MAX_SECS + 5
        assert await _closed(client) == 1000
    record = await _record_of(server, ending.data["session_id"])
    assert record["end_reason"] == "max_duration"
    assert record["ended_at"] - record["started_at"] >= MAX_SECS - 1


@pytest.mark.e2e
def test_metrics_open_to_scrapers_when_the_setting_says_so(server):
    with urllib.request.urlopen(f"{server}/metrics", timeout=10) as response:
        assert b"voice_agent_sessions_total" in response.read()
    # Only /metrics: the JSON API still needs the key.
    with pytest.raises(urllib.error.HTTPError) as refused:
        _get(f"{server}/api/metrics", key=None)
    assert refused.value.code == 401


@pytest.mark.unit
async def test_loop_load_reads_lateness_and_busy_share_from_its_clocks():
    # A scripted loop: each 0.1 s sleep wakes up `late` seconds late, the loop's thread having
    # spent `cpu` seconds on the CPU meanwhile.
    script = [(0.0, 0.01)] * 5 + [(0.1, 0.19)] * 5  # idle, then one session spinning
    clock = {"wall": 0.0, "cpu": 0.0}
    done = asyncio.Event()

    async def sleep(interval: float) -> None:
        if not script:
            done.set()
            await asyncio.Event().wait()  # the monitor runs until cancelled
        late, cpu = script.pop(0)
        clock["wall"] += interval + late
        clock["cpu"] += cpu

    load = LoopLoad(
        interval_secs=0.1, window=5, clock=lambda: clock["wall"], cpu_clock=lambda: clock["cpu"], sleep=sleep
    )
    assert load.late() == 0.0 and load.busy() == 0.0  # nothing sampled yet
    monitor = asyncio.create_task(load.run())
    try:
        await asyncio.wait_for(done.wait(), 5)
        # The window holds the last five samples: all late by 0.1 s, the CPU busy 0.19 of each 0.2 s.
        assert load.late() == pytest.approx(0.1)
        assert load.busy() == pytest.approx(0.95)
    finally:
        monitor.cancel()


@pytest.mark.unit
async def test_loop_load_sees_a_loop_that_real_work_blocks():
    load = LoopLoad(interval_secs=0.01, window=10)
    monitor = asyncio.create_task(load.run())
    try:
        await asyncio.sleep(0.05)
        for _ in range(6):  # what one session's blocking work does to every other one
            spin_until = time.monotonic() + 0.1
            while time.monotonic() < spin_until:
                pass
            await asyncio.sleep(0)
        # Lower bounds only: a slower machine makes the loop later and busier, never less so.
        assert load.late() >= 0.08
        # Spinning is all CPU; another process on the machine's two cores can take a share.
        assert load.busy() > 0.6
    finally:
        monitor.cancel()


@pytest.mark.unit
def test_an_overloaded_loop_refuses_new_sessions_but_not_the_first():
    class Load:
        busy_share, late_secs = 0.0, 0.0

        def busy(self) -> float:
            return self.busy_share

        def late(self) -> float:
            return self.late_secs

    load = Load()
    slots = SessionSlots(10, load=load, max_busy=0.85, max_late_secs=0.25)
    load.busy_share = 0.99
    assert slots.acquire() is None  # an idle server admits one whatever loads it
    problem = slots.acquire()
    assert problem and "overloaded" in problem and "99% busy" in problem
    load.busy_share, load.late_secs = 0.5, 0.4
    assert "400 ms late" in slots.acquire()
    assert slots.in_use == 1
    load.late_secs = 0.05
    assert slots.acquire() is None and slots.in_use == 2
    single = SessionSlots(1)
    assert single.acquire() is None
    assert "limit of 1 concurrent sessions" in single.acquire()


# --- what one client may send (bot/limits.py ClientAllowance), on a clock the test moves ------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _allowance(clock: _Clock, **overrides):
    from bot.limits import ClientAllowance
    from bot.settings import Settings

    return ClientAllowance(Settings(**overrides), now=clock)


@pytest.mark.unit
def test_audio_may_burst_after_a_stall_but_not_flood():
    clock = _Clock()
    allowance = _allowance(clock)  # 1.25x real time over 5 s, 2 s of burst: 8.25 s held
    assert allowance.audio_allowed(8.0)  # a stall's backlog, at once
    assert not allowance.audio_allowed(1.0)
    clock.now += 1.0
    assert allowance.audio_allowed(1.5) and not allowance.audio_allowed(0.01)  # 0.25 left + 1.25
    # Real time forever is always allowed.
    for _ in range(600):
        clock.now += 0.02
        assert allowance.audio_allowed(0.02)


@pytest.mark.unit
def test_typed_messages_come_in_a_burst_then_at_the_rate():
    clock = _Clock()
    allowance = _allowance(clock, max_text_per_sec=1.0, text_burst=3)
    assert [allowance.text_allowed() for _ in range(4)] == [True, True, True, False]
    clock.now += 1.0
    assert [allowance.text_allowed() for _ in range(2)] == [True, False]


@pytest.mark.unit
def test_a_burst_of_refusals_is_answered_and_a_sustained_one_disconnects():
    clock = _Clock()
    allowance = _allowance(clock, abuse_refusals=3, abuse_window_secs=10)
    first = allowance.refused("bad")
    assert first.tell and not first.abusive
    # The same problem is told once a second; a burst within one second is not abuse.
    assert [allowance.refused("bad").tell for _ in range(50)] == [False] * 50
    assert allowance.refused("other").tell
    clock.now += 1.0
    assert not allowance.refused("bad").abusive
    clock.now += 20.0  # the window has passed: the count starts again
    assert not allowance.refused("bad").abusive
    clock.now += 1.0
    assert not allowance.refused("bad").abusive
    clock.now += 1.0
    assert allowance.refused("bad").abusive  # three separate seconds within the window
    assert allowance.refused("bad") == type(first)(tell=False, abusive=False)  # told once
