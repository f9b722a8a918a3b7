"""Shared fixtures: the real server, started once on loopback for the whole test session."""

import os

import pytest

from client.server_process import start_server, stop_server


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    process, url = start_server(log_path)
    yield url
    stop_server(process)
    if os.environ.get("CI"):
        print(f"\n--- server log tail ---\n{log_path.read_text(errors='replace')[-4000:]}")


@pytest.fixture(scope="session")
def ws_url(live_server) -> str:
    return live_server.replace("http://", "ws://") + "/ws"
