"""A short soak (`python -m bench.soak`): 30 sessions three at a time on the benchmark providers, a
spoken turn in every tenth. None may fail; descriptors and threads return to their baseline
and RSS stays bounded once they have all ended."""

import pytest

from bench import soak as soak_module
from client.server_process import start_server, stop_server

pytestmark = pytest.mark.e2e

SESSIONS = 30
MAX_RSS_GROWTH_MB = 30


@pytest.fixture(scope="module")
def soak_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("soak") / "server.log"
    process, url = start_server(log, **soak_module.server_env("benchmark", soak_module.DEFAULT_DELAYS_MS))
    yield process, url.replace("http://", "ws://") + "/ws"
    stop_server(process)


@pytest.mark.timeout(120)
async def test_short_soak_leaves_nothing_behind(soak_server):
    process, url = soak_server
    result = await soak_module.soak(url, process.pid, sessions=SESSIONS, concurrency=3)
    assert result.failures == []
    assert result.spoken_turns == SESSIONS // 10
    assert result.problems(MAX_RSS_GROWTH_MB) == [], (result.baseline, result.final)
