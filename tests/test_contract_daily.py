"""Contract of `POST /api/daily` against a fake Daily REST API on loopback.

The real server runs as a subprocess with the embedded stack, `DAILY_API_KEY=test-key` and
`AGENT_DAILY_API_URL` pointing at `tests/fakes/daily_server.py`. The room URL the fake hands
out (`https://fake.daily.co/<name>`) cannot be reached offline, so the bot's `DailyTransport`
fails to join: the server must survive that and end the session on its own.
"""

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import httpx
import pytest
from pipecat.transports.daily.utils import DailyRESTHelper, DailyRoomParams, DailyRoomProperties

from client.server_process import ROOT, STARTUP_TIMEOUT_SECS, start_server, stop_server
from tests.fakes.daily_server import FakeDaily

API_KEY = "test-key"
ROOM_MINUTES = 7  # not the default (60), to see the setting honoured
EXP_SLACK_SECS = 5
# The bot's join fails on a DNS lookup; daily-core gives up after ~20 s here.
JOIN_OUTCOME_TIMEOUT_SECS = 45
SESSION_END_TIMEOUT_SECS = 10  # after the join has failed
UNHANDLED = ("Traceback (most recent call last)", "exception was never retrieved", "Exception in ASGI")


@pytest.fixture(scope="module")
def fake_daily():
    with FakeDaily(api_key=API_KEY) as daily:
        yield daily


@pytest.fixture(scope="module")
def daily_server(tmp_path_factory, fake_daily):
    log_path = tmp_path_factory.mktemp("daily_server") / "server.log"
    process, url = start_server(
        log_path,
        DAILY_API_KEY=API_KEY,
        AGENT_DAILY_API_URL=fake_daily.api_url,
        AGENT_DAILY_ROOM_MINUTES=str(ROOM_MINUTES),
    )
    yield url, log_path
    stop_server(process)


@pytest.fixture(scope="module")
def room(daily_server, fake_daily):
    """One `POST /api/daily`: its response, when it was made, what the fake saw meanwhile."""
    url, _ = daily_server
    fake_daily.reset()
    before = time.time()
    response = httpx.post(f"{url}/api/daily", timeout=30)
    after = time.time()
    return {"response": response, "before": before, "after": after, "seen": list(fake_daily.requests)}


def _get(url: str, path: str) -> dict:
    response = httpx.get(f"{url}{path}", timeout=5)
    assert response.status_code == 200, (path, response.status_code, response.text)
    return response.json()


def _daily_sessions(url: str) -> tuple[list[dict], list[dict]]:
    sessions = _get(url, "/api/sessions")
    return (
        [s for s in sessions["active"] if s["transport"] == "daily"],
        [s for s in sessions["recent"] if s["transport"] == "daily"],
    )


def _log_excerpt(log_path: Path, pattern: str = r"daily|Daily|Session|ERROR|Traceback", n: int = 25) -> str:
    lines = log_path.read_text(errors="replace").splitlines()
    return "\n".join([line for line in lines if re.search(pattern, line)][-n:])


@pytest.mark.unit
async def test_fake_daily_speaks_the_helpers_protocol():
    """The fake itself, driven by Pipecat's own helper: every call it makes, and a 401."""
    with FakeDaily(api_key=API_KEY) as fake:
        async with aiohttp.ClientSession() as http:
            daily = DailyRESTHelper(daily_api_key=API_KEY, daily_api_url=fake.api_url, aiohttp_session=http)
            room = await daily.create_room(DailyRoomParams(properties=DailyRoomProperties(exp=time.time() + 60)))
            assert room.url == f"https://fake.daily.co/{room.name}" and room.api_created
            assert isinstance(await daily.get_token(room.url, expiry_time=60, owner=True), str)
            assert (await daily.get_room_from_url(room.url)).id == room.id
            assert await daily.delete_room_by_url(room.url)
            with pytest.raises(Exception, match="Room not found"):
                await daily.get_room_from_url(room.url)
            with pytest.raises(Exception, match="status: 400"):  # exp in the past
                await daily.create_room(DailyRoomParams(properties=DailyRoomProperties(exp=time.time() - 1)))
            wrong = DailyRESTHelper(daily_api_key="wrong", daily_api_url=fake.api_url, aiohttp_session=http)
            with pytest.raises(Exception, match="status: 401"):
                await wrong.create_room(DailyRoomParams())
    assert [r.endpoint for r in fake.requests] == [
        "create_room",
        "create_token",
        "get_room",
        "delete_room",
        "get_room",
        "create_room",
        "create_room",
    ]
    assert fake.requests[-1].status == 401 and fake.requests[-1].bearer_key == "wrong"


@pytest.mark.e2e
def test_post_daily_creates_a_room_and_two_tokens(room, fake_daily):
    response = room["response"]
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"room_url", "token"}

    seen = room["seen"]
    assert [r.endpoint for r in seen] == ["create_room", "create_token", "create_token"], seen
    assert all(r.authorization == f"Bearer {API_KEY}" and r.status == 200 for r in seen), seen

    (created,) = [r for r in seen if r.endpoint == "create_room"]
    (room_name,) = fake_daily.rooms
    assert body["room_url"] == f"https://fake.daily.co/{room_name}" == fake_daily.rooms[room_name]["url"]
    lifetime = ROOM_MINUTES * 60
    exp = created.body["properties"]["exp"]
    assert room["before"] + lifetime - EXP_SLACK_SECS <= exp <= room["after"] + lifetime + EXP_SLACK_SECS

    tokens = [r.body["properties"] for r in seen if r.endpoint == "create_token"]
    assert sorted(t["is_owner"] for t in tokens) == [False, True]  # the user's, the bot's
    for props in tokens:
        assert props["room_name"] == room_name
        assert room["before"] + lifetime - EXP_SLACK_SECS <= props["exp"] <= room["after"] + lifetime + EXP_SLACK_SECS
    # The token handed to the user is the non-owner one the fake issued.
    assert fake_daily.tokens[body["token"]]["is_owner"] is False


@pytest.mark.e2e
def test_bot_failing_to_join_offline_ends_its_session(room, daily_server, server_without_daily_key, fake_daily):
    """The bot's DailyTransport cannot reach fake.daily.co: the server keeps serving, the
    session is listed as a Daily one, and it ends (recorded as "ended") soon after the join
    has failed. (`server_without_daily_key` only starts loading meanwhile.)"""
    url, log_path = daily_server
    assert room["response"].status_code == 200, room["response"].text
    room_url = room["response"].json()["room_url"]
    join_error = f"Error joining {room_url}"

    active, recent = _daily_sessions(url)
    assert len({s["session_id"] for s in active + recent}) == 1, (active, recent)
    session_id = (active + recent)[0]["session_id"]

    # Wait (bounded) for the join to fail, checking the server answers all the while.
    deadline = time.monotonic() + JOIN_OUTCOME_TIMEOUT_SECS
    while join_error not in log_path.read_text(errors="replace"):
        assert _get(url, "/health")["status"] == "ok"
        assert time.monotonic() < deadline, (
            f"no join outcome within {JOIN_OUTCOME_TIMEOUT_SECS}s:\n{_log_excerpt(log_path)}"
        )
        time.sleep(0.5)
    failed_at = time.monotonic()

    deadline = failed_at + SESSION_END_TIMEOUT_SECS
    while True:
        health = _get(url, "/health")
        assert health["status"] == "ok"
        active, recent = _daily_sessions(url)
        record = next((s for s in recent if s["session_id"] == session_id), None)
        if not active and record is not None and record["state"] == "ended":
            break
        if time.monotonic() > deadline:
            pytest.fail(
                f"Daily session {session_id} still {[s['state'] for s in active] or record} "
                f"{SESSION_END_TIMEOUT_SECS}s after its bot failed to join "
                f"(/health active_sessions={health['active_sessions']}); server log:\n"
                f"{_log_excerpt(log_path)}"
            )
        time.sleep(0.5)
    assert _get(url, f"/api/sessions/{session_id}")["state"] == "ended"
    assert health["active_sessions"] == 0
    # The session's room is deleted, not left for its token holders (and the bill).
    room_name = room_url.rstrip("/").rsplit("/", 1)[-1]
    for _ in range(50):  # bounded: 5 s
        if room_name not in fake_daily.rooms:
            break
        time.sleep(0.1)
    assert room_name not in fake_daily.rooms
    assert [r.status for r in fake_daily.requests_to("delete_room")][-1] == 200
    log = log_path.read_text(errors="replace")
    assert not [m for m in UNHANDLED if m in log], _log_excerpt(log_path, r".", 40)


@pytest.mark.e2e
@pytest.mark.parametrize(
    "failure",
    ["room_500", "token_500", "wrong_key_401"],
)
def test_daily_refusing_answers_502_and_server_keeps_serving(failure, room, daily_server, fake_daily):
    url, _ = daily_server
    fake_daily.reset()
    sessions_before = _get(url, "/health")["total_sessions"]
    expected_status = {"room_500": "500", "token_500": "500", "wrong_key_401": "401"}[failure]
    if failure == "room_500":
        fake_daily.fail("create_room", 500)
    elif failure == "token_500":
        fake_daily.fail("create_token", 500)
    else:
        fake_daily.api_key = "rotated-key"
    try:
        response = httpx.post(f"{url}/api/daily", timeout=30)
    finally:
        fake_daily.clear_failures()
        fake_daily.api_key = API_KEY

    assert response.status_code == 502, response.text
    detail = response.json()["detail"]
    assert "Daily room creation failed" in detail and expected_status in detail, detail
    assert fake_daily.requests, "the server never called Daily"
    refused = [r for r in fake_daily.requests if r.status == int(expected_status)]
    assert refused, "Daily's refusal was never seen"
    if refused[-1].endpoint == "create_token":
        # The room made before the token failed is deleted, not left orphaned.
        assert fake_daily.requests[-1].endpoint == "delete_room"
        assert fake_daily.requests[-1].status == 200
    health = _get(url, "/health")
    assert health["status"] == "ok"
    assert health["total_sessions"] == sessions_before  # no bot was started
    # Daily answering again: the endpoint works again.
    assert httpx.get(f"{url}/api/sessions", timeout=5).status_code == 200


@pytest.fixture(scope="module")
def server_without_daily_key(tmp_path_factory):
    """A second server, without any Daily key, started in the background: it loads its
    models while the first one's Daily join is being waited for. Yields a future of its URL."""
    if (ROOT / ".env").exists() and "DAILY_API_KEY" in (ROOT / ".env").read_text():
        pytest.skip(".env sets DAILY_API_KEY; the server cannot be started without it")
    log_path = tmp_path_factory.mktemp("no_daily_server") / "server.log"

    def start() -> tuple:
        with pytest.MonkeyPatch.context() as env:
            for name in ("DAILY_API_KEY", "AGENT_DAILY_API_KEY"):
                env.delitem(os.environ, name, raising=False)
            return start_server(log_path)

    with ThreadPoolExecutor(max_workers=1) as pool:
        starting = pool.submit(start)
        yield starting
        if starting.exception() is None:
            stop_server(starting.result()[0])


@pytest.mark.e2e
def test_without_daily_key_answers_503(server_without_daily_key):
    _, url = server_without_daily_key.result(timeout=STARTUP_TIMEOUT_SECS + 10)
    response = httpx.post(f"{url}/api/daily", timeout=10)
    assert response.status_code == 503, response.text
    assert "DAILY_API_KEY" in response.json()["detail"]
    assert _get(url, "/health")["status"] == "ok"
