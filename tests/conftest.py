"""Shared fixtures: the real server, started once on loopback for the whole test session.

Every test is of exactly one kind, marked `unit`, `model` or `e2e` (pyproject.toml says what
each means); a test with none, or with two, stops the collection naming it."""

import os
from pathlib import Path

import pytest

from client.server_process import start_server, stop_server

KINDS = ("unit", "model", "e2e")


def pytest_collection_modifyitems(config, items):
    wrong = []
    for item in items:
        kinds = [kind for kind in KINDS if item.get_closest_marker(kind)]
        if len(kinds) != 1:
            wrong.append(f"{item.nodeid}: {', '.join(kinds) or 'no kind'}")
    if wrong:
        raise pytest.UsageError("each test needs exactly one of the marks unit, model, e2e:\n  " + "\n  ".join(wrong))


@pytest.fixture(scope="session")
def live_server_log(tmp_path_factory) -> Path:
    """The shared test server's log file."""
    return tmp_path_factory.mktemp("server") / "server.log"


@pytest.fixture(scope="session")
def live_server(live_server_log):
    process, url = start_server(live_server_log)
    yield url
    stop_server(process)
    if os.environ.get("CI"):
        print(f"\n--- server log tail ---\n{live_server_log.read_text(errors='replace')[-4000:]}")


@pytest.fixture(scope="session")
def ws_url(live_server) -> str:
    return live_server.replace("http://", "ws://") + "/ws"


CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; `playwright install` is never used
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium")


def launch_chromium(playwright, *extra_args: str):
    """Headless Debian Chromium with a fake microphone (`extra_args` may name its WAV)."""
    return playwright.chromium.launch(
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
            "--autoplay-policy=no-user-gesture-required",
            *extra_args,
        ],
    )
