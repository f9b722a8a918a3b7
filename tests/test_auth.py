"""Auth through the real server on loopback, one test per rule: the API key buys short-lived
one-use session tokens; /ws and POST /api/offer need one, PATCH /api/offer needs the peer a
token opened; /api/* and /metrics need the key; the page, its assets and /health stay open;
browser origins are checked; the page asks for the key once; a public interface without a
key is warned about at startup."""

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import aiohttp
import pytest
from conftest import launch_chromium, needs_chromium

from client.server_process import ROOT, free_port, start_server, stop_server
from client.webrtc import WebRTCPeer, loopback_only_ice
from client.ws import VoiceClient, session_token

API_KEY = "auth-test-key-0123456789"
TOKEN_TTL_SECS = 3
ALLOWED_ORIGIN = "http://allowed.example"
CLOSE_UNAUTHORIZED = 4001
CLOSE_FORBIDDEN_ORIGIN = 4003


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """(URL, log file) of a server with an API key."""
    log = tmp_path_factory.mktemp("auth") / "server.log"
    process, url = start_server(
        log,
        AGENT_API_KEY=API_KEY,
        AGENT_TOKEN_TTL_SECS=str(TOKEN_TTL_SECS),
        AGENT_ALLOWED_ORIGINS=ALLOWED_ORIGIN,
    )
    yield url, log
    stop_server(process)


@pytest.fixture(scope="module")
def server(auth_server):
    return auth_server[0]


def _request(url: str, method: str = "GET", headers: dict | None = None, body: dict | None = None):
    """(status, JSON body or raw bytes, headers) of one request, HTTP errors included."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {**(headers or {}), **({"Content-Type": "application/json"} if data else {})}
    request = urllib.request.Request(url, method=method, headers=headers, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw, got = response.status, response.read(), response.headers
    except urllib.error.HTTPError as e:
        status, raw, got = e.code, e.read(), e.headers
    try:
        return status, json.loads(raw), got
    except ValueError:
        return status, raw, got


def _bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def _ws_url(base: str, token: str | None = None) -> str:
    url = base.replace("http://", "ws://") + "/ws"
    return f"{url}?token={token}" if token else url


async def _refused(url: str, origin: str | None = None) -> tuple[int, str]:
    """Connect to /ws expecting a refusal: (close code, the RTVI error's text)."""
    async with VoiceClient(url, origin=origin) as client:
        error = await client.wait_for(lambda m: m.type == "error", 10)
        assert error.data["fatal"] is True
        for _ in range(100):  # bounded: 10 s
            if client.closed_code is not None:
                break
            await asyncio.sleep(0.1)
        return client.closed_code, error.data["error"]


async def _admitted(url: str, origin: str | None = None) -> None:
    async with VoiceClient(url, origin=origin) as client:
        await client.ready()
        assert client.closed_code is None


@pytest.mark.e2e
def test_tokens_are_issued_only_for_the_api_key(server):
    status, body, headers = _request(f"{server}/api/tokens", "POST")
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer", body
    status, body, _ = _request(f"{server}/api/tokens", "POST", _bearer("wrong-key"))
    assert status == 401, body
    status, body, _ = _request(f"{server}/api/tokens", "POST", _bearer(API_KEY))
    assert status == 200 and body["token"] and body["expires_in"] == TOKEN_TTL_SECS, body
    assert API_KEY not in body["token"]


@pytest.mark.e2e
async def test_websocket_needs_a_valid_token(server):
    code, error = await _refused(_ws_url(server))
    assert code == CLOSE_UNAUTHORIZED and "token is required" in error
    forged = session_token(server, API_KEY)[:-4] + "0000"
    code, error = await _refused(_ws_url(server, forged))
    assert code == CLOSE_UNAUTHORIZED and "invalid" in error
    await _admitted(_ws_url(server, session_token(server, API_KEY)))


@pytest.mark.e2e
async def test_tokens_are_kept_out_of_the_server_log(auth_server):
    server, log = auth_server
    token = session_token(server, API_KEY)
    await _admitted(_ws_url(server, token))
    text = log.read_text(errors="replace")
    assert "/ws?token=[redacted]" in text
    assert token not in text and token.rsplit(".", 1)[-1] not in text


@pytest.mark.e2e
async def test_a_token_is_refused_the_second_time(server):
    token = session_token(server, API_KEY)
    await _admitted(_ws_url(server, token))
    code, error = await _refused(_ws_url(server, token))
    assert code == CLOSE_UNAUTHORIZED and "already used" in error


@pytest.mark.e2e
async def test_an_expired_token_is_refused(server):
    token = session_token(server, API_KEY)
    await asyncio.sleep(TOKEN_TTL_SECS + 0.5)
    code, error = await _refused(_ws_url(server, token))
    assert code == CLOSE_UNAUTHORIZED and "expired" in error


@pytest.mark.e2e
async def test_webrtc_offer_spends_a_token_and_patch_needs_its_peer(server):
    loopback_only_ice()
    with pytest.raises(aiohttp.ClientResponseError) as refused:
        async with WebRTCPeer(server):
            pass
    assert refused.value.status == 401

    token = session_token(server, API_KEY)
    async with WebRTCPeer(server, token=token) as peer:
        await peer.wait_for("bot-ready", 20)
        patch = {"pc_id": peer.pc_id, "candidates": []}
        status, body, _ = _request(f"{server}/api/offer", "PATCH", body=patch)
        assert status == 200, body
        status, body, _ = _request(f"{server}/api/offer", "PATCH", body={"pc_id": "someone-else", "candidates": []})
        assert status == 401, body
        # The token opened one peer connection; it opens no second one.
        with pytest.raises(aiohttp.ClientResponseError) as replayed:
            async with WebRTCPeer(server, token=token):
                pass
        assert replayed.value.status == 401


def _raw_post(url: str, body: bytes, *, chunked: bool = False) -> tuple[int, dict]:
    """(status, JSON body) of a POST with `body` as it is; `chunked` sends it without a length."""
    chunks = (body[i : i + 8192] for i in range(0, len(body), 8192))
    request = urllib.request.Request(
        url,
        method="POST",
        data=chunks if chunked else body,
        headers={"Content-Type": "application/json", **({"Transfer-Encoding": "chunked"} if chunked else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@pytest.mark.e2e
def test_the_offer_checks_its_token_before_it_reads_the_body(server):
    for body in (b"{not json", json.dumps({"sdp": 5}).encode(), b""):
        status, answer = _raw_post(f"{server}/api/offer?token=1.a.b", body)
        assert status == 401, (body, status, answer)
    # With a good token a bad body is a 422 that says what is wrong.
    status, answer = _raw_post(f"{server}/api/offer?token={session_token(server, API_KEY)}", b'{"sdp": 5}')
    assert status == 422 and any("type" in p["loc"] for p in answer["detail"]), answer


OVER_THE_CAP = b'{"sdp": "' + b"v" * (64 * 1024) + b'", "type": "offer"}'


@pytest.mark.e2e
def test_a_body_over_the_cap_is_refused_unread_on_every_route(server):
    for path in ("/api/offer", "/api/tokens", "/api/daily", "/api/sessions"):
        status, answer = _raw_post(f"{server}{path}", OVER_THE_CAP)
        assert status == 413, (path, status, answer)
        assert "65536-byte limit (AGENT_MAX_BODY_BYTES)" in answer["detail"]


@pytest.mark.e2e
def test_a_streamed_body_is_refused_once_it_passes_the_cap(server):
    # No length to refuse it by: the route reading it is stopped at the cap.
    url = f"{server}/api/offer?token={session_token(server, API_KEY)}"
    status, answer = _raw_post(url, OVER_THE_CAP, chunked=True)
    assert status == 413 and "AGENT_MAX_BODY_BYTES" in answer["detail"], (status, answer)
    with urllib.request.urlopen(f"{server}/health", timeout=10) as response:
        assert response.status == 200


@pytest.mark.e2e
@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/api/sessions"),
        ("GET", "/api/sessions/some-id"),
        ("GET", "/api/sessions/some-id/visualizations"),
        ("DELETE", "/api/sessions/some-id"),
        ("GET", "/api/metrics"),
        ("POST", "/api/daily"),
    ],
)
def test_api_routes_need_the_key(server, method, path):
    status, body, _ = _request(f"{server}{path}", method)
    assert status == 401, body
    status, body, _ = _request(f"{server}{path}", method, _bearer("not-the-key"))
    assert status == 401, body
    status, body, _ = _request(f"{server}{path}", method, _bearer(API_KEY))
    assert status not in (401, 403), body  # past auth: 200, or 404/503 for what is not there


@pytest.mark.e2e
def test_page_assets_and_health_stay_open(server):
    for path in ("/", "/js/app.js", "/js/auth.js", "/style.css", "/vendor/plotly.min.js"):
        status, _, _ = _request(f"{server}{path}")
        assert status == 200, path
    status, health, _ = _request(f"{server}/health")
    assert status == 200 and health["auth_required"] is True


@pytest.mark.e2e
def test_metrics_need_the_key(server):
    status, _, _ = _request(f"{server}/metrics")
    assert status == 401
    status, body, _ = _request(f"{server}/metrics", headers=_bearer(API_KEY))
    assert status == 200 and b"voice_agent_sessions_total" in body


@pytest.mark.e2e
async def test_browser_origins_must_be_the_servers_own_or_allowed(server):
    code, error = await _refused(_ws_url(server, session_token(server, API_KEY)), "http://evil.example")
    assert code == CLOSE_FORBIDDEN_ORIGIN and "evil.example" in error
    await _admitted(_ws_url(server, session_token(server, API_KEY)), ALLOWED_ORIGIN)
    await _admitted(_ws_url(server, session_token(server, API_KEY)), server)  # same origin

    evil = {**_bearer(API_KEY), "Origin": "http://evil.example"}
    status, body, _ = _request(f"{server}/api/tokens", "POST", evil)
    assert status == 403, body
    status, body, _ = _request(f"{server}/api/tokens", "POST", {**evil, "Origin": ALLOWED_ORIGIN})
    assert status == 200, body


CONNECTED_JS = """() => ['ready', 'listening', 'bot-speaking']
  .includes(document.querySelector('#status').dataset.state)"""


@pytest.mark.e2e
@needs_chromium
def test_the_page_asks_for_the_key_once_and_connects_with_tokens(server):
    playwright_sync = pytest.importorskip("playwright.sync_api")
    asked: list[str] = []
    with playwright_sync.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_context().new_page()
            answers = iter(["a-wrong-key", API_KEY])

            def answer(dialog) -> None:
                asked.append(dialog.message)
                dialog.accept(next(answers))

            page.on("dialog", answer)
            page.goto(f"{server}/")
            for attempt in range(2):
                page.click("#connect")
                try:  # connected once the bot is ready (the fake mic's beeps may read as speech)
                    page.wait_for_function(CONNECTED_JS, timeout=60_000)
                except playwright_sync.TimeoutError:
                    pytest.fail(
                        f"not connected (attempt {attempt + 1}): state"
                        f" {page.get_attribute('#status', 'data-state')}, error"
                        f" {page.inner_text('#error') if page.is_visible('#error') else '-'}, asked {asked}"
                    )
                page.click("#connect")  # Disconnect
                page.wait_for_selector('#status[data-state="disconnected"]', timeout=10_000)
            stored = page.evaluate("() => sessionStorage.getItem('voice-agent-api-key')")
        finally:
            browser.close()
    # The wrong key was refused and asked again; the right one was kept for the second
    # connection, which needed a fresh token but no question.
    assert len(asked) == 2 and "refused" in asked[1], asked
    assert stored == API_KEY


@pytest.mark.e2e
def test_a_public_interface_without_a_key_is_warned_about_at_startup(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "AGENT_API_KEY"}
    env |= {
        "AGENT_HOST": "0.0.0.0",
        "AGENT_PORT": str(free_port()),
        "AGENT_STORE_PATH": str(tmp_path / "records.sqlite3"),
    }
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "server.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        # The warning comes before the models load, and uvicorn binds only after they have:
        # the server is stopped before it ever listens.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "WITHOUT AN API KEY" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()[-2000:]
            time.sleep(0.2)
    finally:
        process.kill()
        process.wait(timeout=10)
    text = log_path.read_text()
    assert "SERVING ON 0.0.0.0 WITHOUT AN API KEY" in text, text[-2000:]
    assert "WARNING" in text


# --- hostile requests: each refused with a status that names the problem ------------------


@pytest.mark.e2e
def test_a_dns_rebinding_page_is_refused_on_http_and_websocket(live_server):
    # A page on rebound.example whose name now points at 127.0.0.1: its Origin matches its Host.
    port = live_server.rsplit(":", 1)[1]
    rebound = {"Host": f"rebound.example:{port}", "Origin": f"http://rebound.example:{port}"}
    for path in ("/api/sessions", "/health", "/"):
        status, answer, _ = _request(f"{live_server}{path}", headers=rebound)
        assert status == 400, (path, status, answer)
        assert "'rebound.example' is not served here; list it in AGENT_ALLOWED_HOSTS" in answer["detail"]

    # A raw handshake: a WebSocket client library sets Host from the URL it dials.
    async def rebound_handshake() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(port))
        writer.write(
            f"GET /ws HTTP/1.1\r\nHost: rebound.example:{port}\r\nOrigin: {rebound['Origin']}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
        )
        status_line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        return int(status_line.split()[1])

    assert asyncio.run(rebound_handshake()) == 400
    # The server's own names still work.
    assert _request(f"{live_server}/health")[0] == 200
    assert _request(f"{live_server.replace('127.0.0.1', 'localhost')}/health")[0] == 200


@pytest.mark.unit
def test_allowed_hosts_are_the_loopback_names_the_bound_address_and_the_listed_ones():
    from bot.request_guards import allowed_hosts

    assert allowed_hosts("0.0.0.0", []) == {"127.0.0.1", "localhost", "::1", "[::1]"}
    assert "10.0.0.5" in allowed_hosts("10.0.0.5", [])
    assert "voice.example.com" in allowed_hosts("0.0.0.0", ["Voice.Example.com"])


@pytest.mark.e2e
@pytest.mark.parametrize("key", ["", "   ", "short-key"])
def test_an_empty_or_short_api_key_stops_the_server_at_startup(tmp_path, key):
    env = {
        **os.environ,
        "AGENT_API_KEY": key,
        "AGENT_PORT": str(free_port()),
        "AGENT_STORE_PATH": str(tmp_path / "records.sqlite3"),
    }
    done = subprocess.run([sys.executable, "server.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"AGENT_API_KEY is {len(key.strip())} characters" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.e2e
async def test_a_malformed_token_is_refused_not_an_error(server, auth_server):
    _, log = auth_server
    for token in ("1.a.%C3%A9", "%C3%A9", "1.%00.x", "9" * 40 + ".a.b"):
        status, answer, _ = _request(f"{server}/api/offer?token={token}", "POST", body={"sdp": "v=0", "type": "offer"})
        assert status == 401 and "invalid session token" in answer["detail"], (token, status, answer)
        code, error = await _refused(_ws_url(server, token))
        assert code == CLOSE_UNAUTHORIZED and "invalid" in error, (token, code, error)
    assert "Traceback" not in log.read_text(errors="replace")


@pytest.mark.e2e
@pytest.mark.parametrize("query", ["limit=100000000000000000000", "limit=-1", "limit=0", "offset=-1", "limit=x"])
def test_paging_out_of_range_is_refused(server, query):
    status, answer, _ = _request(f"{server}/api/sessions?{query}", headers=_bearer(API_KEY))
    assert status == 422, (query, status, answer)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("offer", "expected"),
    [
        ({"sdp": "", "type": ""}, "type must be 'offer'"),
        ({"sdp": "", "type": "answer"}, "type must be 'offer'"),
        ({"sdp": "", "type": "offer"}, "not an SDP offer"),
        ({"sdp": "v=0\r\nm=\r\n", "type": "offer"}, "cannot be used"),
        ({"sdp": "v=0\r\nm=audio 9 UDP 0\r\n", "type": "offer"}, "cannot be used"),
    ],
)
def test_a_bad_sdp_offer_is_a_400_naming_the_problem(server, offer, expected):
    status, answer, _ = _request(f"{server}/api/offer?token={session_token(server, API_KEY)}", "POST", body=offer)
    assert status == 400 and expected in answer["detail"], (status, answer)
    assert _request(f"{server}/health")[0] == 200


@pytest.mark.e2e
async def test_access_log_lines_of_tokenized_requests_are_kept_redacted(auth_server):
    server, log = auth_server
    token = session_token(server, API_KEY)
    _request(f"{server}/api/offer?token={token}", "POST", body={"sdp": "", "type": "offer"})
    text = log.read_text(errors="replace")
    assert "POST /api/offer?token=[redacted] HTTP/1.1" in text  # uvicorn's access line, whole
    assert "not enough values to unpack" not in text
    assert token not in text
