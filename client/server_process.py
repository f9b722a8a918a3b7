"""Start the real server as a child process on a free loopback port (tests, benchmarks)."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_SECS = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(log_path: Path, **env_overrides: str) -> tuple[subprocess.Popen, str]:
    """Run `python server.py` with the embedded stack; return it once /health answers."""
    port = free_port()
    env = {
        **os.environ,
        "AGENT_HOST": "127.0.0.1",
        "AGENT_PORT": str(port),
        # The embedded stack, whatever keys the caller's shell has.
        "AGENT_STT_PROVIDER": "embedded",
        "AGENT_LLM_PROVIDER": "embedded",
        "AGENT_TTS_PROVIDER": "embedded",
        # Records of test and benchmark sessions stay beside the log, out of the user's store.
        "AGENT_STORE_PATH": str(log_path.parent / "records.sqlite3"),
        # The log is what explains a failed test or an odd benchmark turn.
        "AGENT_LOG_LEVEL": "DEBUG",
        **env_overrides,
    }
    log = log_path.open("wb")
    process = subprocess.Popen([sys.executable, "server.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"server not healthy after {STARTUP_TIMEOUT_SECS}s:\n{log_path.read_text()[-3000:]}")


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
