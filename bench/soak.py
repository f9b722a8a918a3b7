"""Soak: many short sessions, a few at a time; nothing may fail and nothing may pile up.

Each session connects over `/ws`, waits for `bot-ready`, and disconnects; every tenth first
speaks one question and waits for its answer. The server's RSS, open file descriptors and
threads are read (psutil) after a warm-up and again once the last session has ended: RSS
may grow at most `--max-rss-growth-mb`, descriptors and threads must come back to baseline.

    .venv/bin/python -m bench.soak --sessions 1000 --concurrency 4
    .venv/bin/python -m bench.soak --config embedded --sessions 200

Exit status 0 when every check passed. `tests/test_soak.py` runs a short version.
"""

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.capacity import BenchClient, SharedMicrophone, load_clips, server_env
from client.server_process import start_server, stop_server

WARM_UP_SESSIONS = 10
SETTLE_SECS = 20  # how long ended sessions get to release their threads and descriptors
DEFAULT_DELAYS_MS = {"stt": 50, "llm": 100, "tts": 50}


@dataclass
class Resources:
    rss_mb: float
    fds: int
    threads: int

    @classmethod
    def of(cls, process: psutil.Process) -> "Resources":
        return cls(process.memory_info().rss / 2**20, process.num_fds(), process.num_threads())


@dataclass
class SoakResult:
    sessions: int
    spoken_turns: int = 0
    failures: list[str] = field(default_factory=list)
    baseline: Resources | None = None
    final: Resources | None = None
    peak_rss_mb: float = 0.0
    seconds: float = 0.0

    def problems(self, max_rss_growth_mb: float) -> list[str]:
        found = [f"{len(self.failures)} failed sessions, e.g. {self.failures[:3]}"] if self.failures else []
        if self.final.rss_mb - self.baseline.rss_mb > max_rss_growth_mb:
            found.append(f"RSS grew {self.final.rss_mb - self.baseline.rss_mb:.1f} MB")
        if self.final.fds > self.baseline.fds:
            found.append(f"open fds {self.baseline.fds} -> {self.final.fds}")
        if self.final.threads > self.baseline.threads:
            found.append(f"threads {self.baseline.threads} -> {self.final.threads}")
        return found


async def one_session(url: str, mic: SharedMicrophone, clip, *, speak: bool, timeout: float) -> None:
    async with BenchClient(url, mic=mic) as client:
        await client.ready(timeout)
        if speak:
            await client.wait_for(lambda m: m.type == "bot-stopped-speaking", timeout)
            sent = await client.say_frames(clip.frames)
            message = await client.wait_for(
                lambda m: m.type == "server-message" and m.data.get("type") == "turn-metrics",
                timeout,
                after=sent,
            )
            status = message.data["turn"]["status"]
            if status != "completed" or client.first_voiced_audio_after(sent - clip.trailing_silence) is None:
                raise RuntimeError(f"spoken turn {status}, unanswered")


async def settle(process: psutil.Process, baseline: Resources, deadline: float) -> Resources:
    """Wait (bounded) until descriptors and threads are back to baseline."""
    while True:
        now = Resources.of(process)
        if (now.fds <= baseline.fds and now.threads <= baseline.threads) or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.5)


async def soak(
    url: str,
    pid: int,
    *,
    sessions: int,
    concurrency: int,
    speak_every: int = 10,
    timeout: float = 20.0,
    progress: bool = False,
) -> SoakResult:
    process = psutil.Process(pid)
    clips = load_clips()
    mic = SharedMicrophone()
    result = SoakResult(sessions=sessions)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(sessions):
        queue.put_nowait(index)
    baseline_taken = asyncio.Event()
    warm_up = min(sessions, WARM_UP_SESSIONS)
    done = 0

    async def worker() -> None:
        nonlocal done
        while not queue.empty():
            index = queue.get_nowait()
            if index >= warm_up:
                # Lazily built process-wide things (shared models, pools) exist by now.
                await baseline_taken.wait()
            speak = index % speak_every == speak_every - 1
            try:
                await asyncio.wait_for(
                    one_session(url, mic, clips[index % len(clips)], speak=speak, timeout=timeout),
                    timeout * 3,
                )
                result.spoken_turns += speak
            except Exception as e:
                result.failures.append(f"session {index}: {type(e).__name__}: {e}")
            done += 1
            result.peak_rss_mb = max(result.peak_rss_mb, process.memory_info().rss / 2**20)
            if progress and done % 50 == 0:
                print(f"{done} sessions, RSS {process.memory_info().rss / 2**20:.0f} MB", flush=True)

    async def take_baseline() -> None:
        while done < warm_up:
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # the warm-up sessions release what they held
        result.baseline = Resources.of(process)
        baseline_taken.set()

    started = time.monotonic()
    baseline_task = asyncio.create_task(take_baseline())
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await baseline_task
    await mic.close()
    result.final = await settle(process, result.baseline, time.monotonic() + SETTLE_SECS)
    result.seconds = time.monotonic() - started
    return result


async def main_async(args) -> int:
    log = Path(tempfile.mkdtemp()) / "server.log"
    delays = dict(zip(("stt", "llm", "tts"), map(float, args.delays.split(","))))
    process, http_url = start_server(log, **server_env(args.config, delays))
    try:
        result = await soak(
            http_url.replace("http://", "ws://") + "/ws",
            process.pid,
            sessions=args.sessions,
            concurrency=args.concurrency,
            progress=True,
        )
    finally:
        stop_server(process)
    problems = result.problems(args.max_rss_growth_mb)
    print(
        json.dumps(
            {
                "config": args.config,
                "sessions": result.sessions,
                "concurrency": args.concurrency,
                "spoken_turns": result.spoken_turns,
                "failures": len(result.failures),
                "baseline": vars(result.baseline),
                "final": vars(result.final),
                "rss_growth_mb": round(result.final.rss_mb - result.baseline.rss_mb, 1),
                "peak_rss_mb": round(result.peak_rss_mb, 1),
                "seconds": round(result.seconds, 1),
                "problems": problems,
                "server_log": str(log),
            },
            indent=2,
        )
    )
    return 1 if problems else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=["benchmark", "embedded"], default="benchmark")
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--delays", default="50,100,50", help="benchmark STT,LLM,TTS delays in ms")
    parser.add_argument("--max-rss-growth-mb", type=float, default=50.0)
    args = parser.parse_args()
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
