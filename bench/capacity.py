"""Capacity: N concurrent voice sessions over `/ws`, each talking like a person.

Sessions arrive staggered; each waits for the greeting, then for several turns speaks a
2-4 s question at real-time pace, waits for the whole answer and pauses 1-2 s. One question
in four (`TOOL_EVERY`, counted over the whole run) needs a tool (bench/latency.py's tool
questions), so the percentiles include tool turns. Each session speaks in one of the tuning
voices (`client.speech.VOICES`: Piper's Joe and espeak-ng, each at two rates). Per N it
reports the answered-turn rate, voice-to-voice (end of speech -> first voiced bot audio at
the client) p50/p95/max over all turns and per kind (for tool turns also the first audio of
the answer: after the tool's result reached the client), the turn model's time, the latency
the server itself added, the server's CPU and RSS (psutil on its pid) and the load
generator's own CPU (it shares the cores). A separate measurement opens K idle sessions and
reports RSS per extra session.

Added latency = voice-to-voice - the VAD's stop time (the `vad_stop` milestone of the turn's
`turn-metrics`) - the turn end's critical path (the turn model and the STT delay run side by
side from the VAD stop, so the longer of the two) - the configured LLM and TTS delays. It is
only meaningful with the benchmark providers, whose service times are fixed.

    .venv/bin/python -m bench.capacity --config benchmark --sessions 1,2,4,8,16
    .venv/bin/python -m bench.capacity --config embedded --sessions 1,2,4 --turns 3
    .venv/bin/python -m bench.capacity --config benchmark --sessions 10 --json out.json

Results go to `bench/results/capacity-<date>-<commit>.json` unless `--json` names a file.

The load generator is one asyncio process: every clip is encoded into protobuf frames once,
and one 20 ms clock feeds every session's microphone (silence between turns).
"""

import argparse
import asyncio
import itertools
import json
import random
import statistics
import tempfile
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.latency import TOOLS
from bench.provenance import provenance, result_path
from bot.percentiles import percentile
from bot.turn_models import TURN_MODEL_METRIC
from client.server_process import start_server, stop_server
from client.speech import HELD_OUT, JOE, VOICES, Voice, speech_pcm, trailing_silence_seconds
from client.ws import CHUNK_BYTES, CHUNK_SECONDS, MIC_RATE, VoiceClient, audio_frame

CLOSE_TRY_AGAIN_LATER = 1013  # the server refuses a session when full or overloaded

# 2-4 s each when spoken by the embedded voice. No commas: the voice pauses at a comma long
# enough for the VAD to stop and for Smart Turn to end some turns there, which would measure
# the turn model's judgement rather than the server. For the same reason every sentence is
# one Smart Turn judges finished (probability > 0.9) with 0.2 s of silence after it: "Please
# tell me what bees make and why they make it." scored 0.24 and ended one turn in six by the
# silence fallback.
UTTERANCES = [
    "Can you tell me what the capital of France is please?",
    "Who wrote the play Romeo and Juliet in the sixteenth century?",
    "How many legs does a spider have compared to an insect?",
    "What colour is the sky on a clear summer day?",
    "Which ocean is the biggest one on our planet?",
    "What do bees make from the nectar of flowers?",
    "Who painted the Mona Lisa and where can I see it today?",
]
TOOL_EVERY = 4  # one question in this many needs a tool
TUNING_VOICES = [name for name in VOICES if name not in HELD_OUT]
DEFAULT_DELAYS_MS = {"stt": 150, "llm": 350, "tts": 150}
# A turn end this long after the VAD stop and the turn model's verdict was the silence
# fallback.
FALLBACK_SECS = 1.0


@dataclass
class Clip:
    text: str
    frames: list[bytes]  # protobuf audio frames, 20 ms each
    trailing_silence: float
    speech_seconds: float
    voice: str = JOE.name
    tool: str | None = None  # the tool the question needs


def load_clips(voice: Voice = JOE, questions: list[tuple[str, str | None]] | None = None) -> list[Clip]:
    """`questions` (text, tool needed or None) spoken by `voice`; by default the plain ones."""
    clips = []
    for text, tool in questions or [(text, None) for text in UTTERANCES]:
        pcm = speech_pcm(text, MIC_RATE, voice)
        frames = [
            audio_frame(pcm[i : i + CHUNK_BYTES].ljust(CHUNK_BYTES, b"\0")) for i in range(0, len(pcm), CHUNK_BYTES)
        ]
        silence = trailing_silence_seconds(pcm, MIC_RATE)
        clips.append(Clip(text, frames, silence, len(pcm) / 2 / MIC_RATE - silence, voice.name, tool))
    return clips


class QuestionDeck:
    """What each session asks next: one question in `TOOL_EVERY` over the whole run needs a
    tool (the first one does), the rest are plain; each session keeps its voice."""

    def __init__(self, voices: list[Voice]) -> None:
        self._plain = {voice.name: load_clips(voice) for voice in voices}
        tools = [(request.text, request.tool) for request in TOOLS]
        self._tools = {voice.name: load_clips(voice, tools) for voice in voices}
        self._voice_names = [voice.name for voice in voices]
        self.restart()

    def restart(self) -> None:
        """A new run: its first session takes the first voice, its first question a tool."""
        self._voices = itertools.cycle(self._voice_names)
        self._asked = itertools.count()

    def next_voice(self) -> str:
        return next(self._voices)

    def next_question(self, voice: str, rng: random.Random) -> Clip:
        pool = self._tools if next(self._asked) % TOOL_EVERY == 0 else self._plain
        return rng.choice(pool[voice])


class SharedMicrophone:
    """One clock for every session: each 20 ms tick sends each client its next frame."""

    def __init__(self) -> None:
        self._clients: list[BenchClient] = []
        self._silence = audio_frame(bytes(CHUNK_BYTES))
        self._task: asyncio.Task | None = None

    def attach(self, client: "BenchClient") -> None:
        self._clients.append(client)
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    def detach(self, client: "BenchClient") -> None:
        self._clients.remove(client)

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        started, ticks = time.monotonic(), 0
        while True:
            now = time.monotonic()
            for client in list(self._clients):
                await client.send_next_frame(self._silence, now)
            ticks += 1
            delay = started + ticks * CHUNK_SECONDS - time.monotonic()
            if delay < -0.1:
                # Behind (a busy loop): drop the gap as a real microphone would, rather than
                # burst audio faster than real time.
                started, ticks = time.monotonic(), 0
            await asyncio.sleep(max(0.0, delay))


@dataclass
class BenchClient(VoiceClient):
    mic: SharedMicrophone | None = None
    _frames: deque = field(default_factory=deque)
    _frames_done: asyncio.Future | None = None

    async def say_frames(self, frames: list[bytes]) -> float:
        """Speak pre-encoded frames; returns the monotonic time the last one was sent."""
        self._frames_done = asyncio.get_running_loop().create_future()
        self._frames.extend(frames)
        return await self._frames_done

    async def send_next_frame(self, silence: bytes, now: float) -> None:
        frame = self._frames.popleft() if self._frames else silence
        try:
            await self._ws.send(frame)
        except Exception:
            return  # closed: the reader records how
        if not self._frames and self._frames_done and not self._frames_done.done():
            self._frames_done.set_result(now)

    async def _stream_microphone(self) -> None:
        self.mic.attach(self)
        try:
            await asyncio.Event().wait()
        finally:
            self.mic.detach(self)


def _turn_metrics(m) -> bool:
    return m.type == "server-message" and m.data.get("type") == "turn-metrics"


def _turn_model_seconds(client: BenchClient, start: float, end: float) -> float | None:
    """The turn model's time for the turn: its last run before the turn ended."""
    values = [
        p["value"]
        for m in client.messages
        if m.type == "metrics" and start <= m.at <= end
        for p in m.data.get("processing", [])
        if p.get("processor") == TURN_MODEL_METRIC
    ]
    return values[-1] if values else None


async def run_session(
    url: str,
    mic: SharedMicrophone,
    deck: QuestionDeck,
    *,
    turns: int,
    arrival: float,
    rng: random.Random,
    timeout: float,
) -> list[dict]:
    await asyncio.sleep(arrival)
    results: list[dict] = []
    client = BenchClient(url, mic=mic)
    voice = deck.next_voice()
    try:
        async with client:
            await client.ready(timeout)
            await client.wait_for(lambda m: m.type == "bot-stopped-speaking", timeout)
            for _ in range(turns):
                clip = deck.next_question(voice, rng)
                started = time.monotonic()
                sent = await client.say_frames(clip.frames)
                speech_end = sent - clip.trailing_silence
                turn = {
                    "kind": "tool" if clip.tool else "plain",
                    "voice": voice,
                    "question": clip.text,
                    "speech_seconds": round(clip.speech_seconds, 2),
                    "answered": False,
                }
                results.append(turn)
                try:
                    # The turn holding the end of speech closes after it was sent; a turn
                    # that ended early at a pause was closed (interrupted) before.
                    message = await client.wait_for(_turn_metrics, timeout, after=sent)
                except TimeoutError:
                    turn["error"] = "no turn-metrics"
                    continue
                record = message.data["turn"]
                first_audio = client.first_voiced_audio_after(speech_end)
                turn["status"] = record["status"]
                turn["answered"] = record["status"] == "completed" and first_audio is not None
                turn["milestones"] = (record.get("latency") or {}).get("milestones", {})
                turn["turn_model"] = _turn_model_seconds(client, started, message.at)
                if first_audio is not None:
                    turn["voice_to_voice"] = first_audio - speech_end
                if clip.tool:
                    _tool_figures(turn, client, clip.tool, started, message.at, speech_end)
                await asyncio.sleep(rng.uniform(1.0, 2.0))
                turn["playback_stall"] = client.playback_stall_seconds(speech_end)
    except Exception as e:  # a refused or dropped session: its turns count as unanswered
        refused = client.closed_code == CLOSE_TRY_AGAIN_LATER
        results.append({"answered": False, "refused": refused, "error": f"session: {type(e).__name__}: {e}"})
    return results


def _tool_figures(turn: dict, client: BenchClient, tool: str, start: float, end: float, speech_end: float) -> None:
    """The tools the turn called, and the first audio of its answer: the first voiced bot audio
    after the last tool result reached the client (an acknowledgement is not the answer)."""
    window = [m for m in client.messages if start <= m.at <= end]
    turn["tools"] = [m.data.get("function_name") for m in window if m.type == "llm-function-call-in-progress"]
    turn["tool_ok"] = turn["tools"] == [tool]
    results = [m.at for m in window if m.type == "llm-function-call-stopped"]
    answer_audio = client.first_voiced_audio_after(results[-1]) if results else None
    if answer_audio is not None and answer_audio <= end:
        turn["answer_audio"] = answer_audio - speech_end


def spread(values: list[float]) -> dict | None:
    if not values:
        return None
    return {
        "p50": round(percentile(values, 50), 3),
        "p95": round(percentile(values, 95), 3),
        "max": round(max(values), 3),
    }


class ServerSampler:
    """CPU% (of one core) and RSS of the server process, and its event loop's lateness
    (`/health`), sampled every half second."""

    def __init__(self, pid: int, http_url: str) -> None:
        self._process = psutil.Process(pid)
        self._http_url = http_url
        self.cpu: list[float] = []
        self.rss: list[int] = []
        self.loop_lag_ms: list[float] = []
        self.loop_busy: list[float] = []

    async def run(self) -> None:
        self._process.cpu_percent(None)
        while True:
            await asyncio.sleep(0.5)
            self.cpu.append(self._process.cpu_percent(None))
            self.rss.append(self._process.memory_info().rss)
            try:
                health = await asyncio.to_thread(_health, self._http_url)
            except OSError:
                continue
            self.loop_lag_ms.append(health["loop_lag_ms"])
            self.loop_busy.append(health["loop_busy"])


def silence_fallback(turn: dict) -> bool:
    """Smart Turn judged the speech unfinished and the turn ended only after the longest
    pause (AGENT_TURN_MAX_SILENCE_SECS, 1.5 s by default): policy, not server time."""
    milestones = turn.get("milestones", {})
    waited = milestones.get("turn_end", 0.0) - milestones.get("vad_stop", 0.0)
    return waited - (turn.get("turn_model") or 0.0) > FALLBACK_SECS


def added_latency(turn: dict, delays: dict[str, float]) -> float | None:
    """On the server's clock: its voice-to-voice (end of speech as the VAD dates it -> first
    bot audio sent) less the VAD's stop time, the turn end's critical path and the delays."""
    milestones = turn.get("milestones", {})
    if "bot_audio_sent" not in milestones or "vad_stop" not in milestones or silence_fallback(turn):
        return None
    turn_end_path = max(turn.get("turn_model") or 0.0, delays["stt"])
    return milestones["bot_audio_sent"] - milestones["vad_stop"] - turn_end_path - delays["llm"] - delays["tts"]


async def run_load(url: str, http_url: str, pid: int, sessions: int, args, deck: QuestionDeck, delays) -> dict:
    rng = random.Random(args.seed + sessions)
    mic = SharedMicrophone()
    sampler = ServerSampler(pid, http_url)
    sampling = asyncio.create_task(sampler.run())
    me = psutil.Process()
    cpu_before, wall_before = me.cpu_times(), time.monotonic()
    gap = args.arrival_secs / max(sessions, 1)
    deck.restart()
    per_session = await asyncio.gather(
        *(
            run_session(
                url,
                mic,
                deck,
                turns=args.turns,
                arrival=i * gap + rng.uniform(0, gap),
                rng=random.Random(rng.random()),
                timeout=args.turn_timeout,
            )
            for i in range(sessions)
        )
    )
    wall = time.monotonic() - wall_before
    cpu_after = me.cpu_times()
    sampling.cancel()
    await mic.close()
    turns = [t for session in per_session for t in session]
    answered = [t for t in turns if t["answered"]]
    v2v = [t["voice_to_voice"] for t in answered]
    added = [a for t in answered if (a := added_latency(t, delays)) is not None]
    loadgen_cpu = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / wall
    errors = sorted({t["error"] for t in turns if "error" in t})
    return {
        "sessions": sessions,
        "turns": len(turns),
        "refused_sessions": sum(bool(t.get("refused")) for t in turns),
        "answered": len(answered),
        "answered_rate": round(len(answered) / len(turns), 4) if turns else 0.0,
        "voice_to_voice": spread(v2v),
        "tool_share": round(sum(t.get("kind") == "tool" for t in turns) / len(turns), 3) if turns else 0.0,
        "by_kind": {
            kind: {
                "turns": sum(t.get("kind") == kind for t in turns),
                "answered": sum(t.get("kind") == kind for t in answered),
                "voice_to_voice": spread([t["voice_to_voice"] for t in answered if t["kind"] == kind]),
                **(
                    {
                        "answer_audio": spread(
                            [t["answer_audio"] for t in answered if t["kind"] == kind and "answer_audio" in t]
                        ),
                        "tool_called_once": sum(t.get("tool_ok", False) for t in answered if t["kind"] == kind),
                    }
                    if kind == "tool"
                    else {}
                ),
            }
            for kind in ("plain", "tool")
        },
        "added_latency": spread(added) if delays["fixed"] else None,
        "silence_fallback_turns": sum(silence_fallback(t) for t in answered),
        "vad_stop": spread([t["milestones"]["vad_stop"] for t in answered if "vad_stop" in t["milestones"]]),
        "turn_model": spread([t["turn_model"] for t in answered if t.get("turn_model") is not None]),
        # Mid-reply silences a player without a jitter buffer would hear, per answered turn.
        "playback_stall": spread([t["playback_stall"] for t in answered if "playback_stall" in t]),
        "server_cpu_percent": {
            "mean": round(statistics.fmean(sampler.cpu), 1) if sampler.cpu else None,
            "max": round(max(sampler.cpu), 1) if sampler.cpu else None,
        },
        "loop_lag_ms": spread(sampler.loop_lag_ms),
        "loop_busy": spread(sampler.loop_busy),
        "server_rss_mb_max": round(max(sampler.rss) / 2**20, 1) if sampler.rss else None,
        "loadgen_cpu_percent": round(100 * loadgen_cpu, 1),
        "wall_seconds": round(wall, 1),
        "errors": errors[:5],
        "turn_rows": turns,  # each turn's milestones, turn model time and voice-to-voice
    }


def _health(http_url: str) -> dict:
    with urllib.request.urlopen(f"{http_url}/health", timeout=10) as response:
        return json.load(response)


async def wait_idle(http_url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _health(http_url)["active_sessions"]:
        await asyncio.sleep(0.5)


async def idle_rss_per_session(url: str, http_url: str, pid: int, count: int) -> dict:
    """Open `count` idle sessions (ready, greeting heard) and compare the server's RSS."""
    process = psutil.Process(pid)
    await wait_idle(http_url)
    await asyncio.sleep(1)
    before = process.memory_info().rss
    mic = SharedMicrophone()
    clients = [BenchClient(url, mic=mic) for _ in range(count)]
    try:
        for client in clients:
            await client.__aenter__()
            await client.ready(30)
        for client in clients:
            await client.wait_for(lambda m: m.type == "bot-stopped-speaking", 30)
        await asyncio.sleep(2)
        during = process.memory_info().rss
        threads = process.num_threads()
    finally:
        for client in clients:
            await client.__aexit__(None, None, None)
        await mic.close()
    await wait_idle(http_url)
    await asyncio.sleep(1)
    return {
        "idle_sessions": count,
        "rss_mb_before": round(before / 2**20, 1),
        "rss_mb_with_idle": round(during / 2**20, 1),
        "rss_mb_per_idle_session": round((during - before) / count / 2**20, 2),
        "server_threads_with_idle": threads,
        "rss_mb_after_close": round(process.memory_info().rss / 2**20, 1),
    }


def server_env(config: str, delays_ms: dict[str, float]) -> dict[str, str]:
    unlimited = {"AGENT_MAX_SESSIONS": "0"}  # the bench sets the load, not the session cap
    if config == "embedded":
        return unlimited
    return unlimited | {
        **{f"AGENT_{stage.upper()}_PROVIDER": "benchmark" for stage in ("stt", "llm", "tts")},
        **{f"AGENT_BENCHMARK_{stage.upper()}_DELAY_MS": str(ms) for stage, ms in delays_ms.items()},
    }


async def bench(args) -> dict:
    deck = QuestionDeck([VOICES[name] for name in args.voices.split(",")])  # synthesized before any clock runs
    delays_ms = dict(zip(("stt", "llm", "tts"), map(float, args.delays.split(","))))
    delays = {stage: ms / 1000 for stage, ms in delays_ms.items()} | {"fixed": args.config == "benchmark"}
    log = Path(tempfile.mkdtemp()) / "server.log"
    process, http_url = start_server(log, **server_env(args.config, delays_ms))
    url = http_url.replace("http://", "ws://") + "/ws"
    report = {
        "benchmark": "capacity",
        **provenance(),
        "config": args.config,
        "delays_ms": delays_ms if args.config == "benchmark" else None,
        "arguments": {k: str(v) for k, v in vars(args).items()},
        "server_log": str(log),
        "runs": [],
    }
    try:
        if args.idle:
            report["idle"] = await idle_rss_per_session(url, http_url, process.pid, args.idle)
            print(json.dumps(report["idle"]), flush=True)
        for sessions in args.sessions:
            run = await run_load(url, http_url, process.pid, sessions, args, deck, delays)
            report["runs"].append(run)
            print(json.dumps({k: v for k, v in run.items() if k != "turn_rows"}), flush=True)
            await wait_idle(http_url)
            if run["answered_rate"] < args.stop_below:
                break
    finally:
        stop_server(process)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=["benchmark", "embedded"], default="benchmark")
    parser.add_argument("--sessions", default="1,2,4,8", type=lambda s: [int(n) for n in s.split(",")])
    parser.add_argument("--turns", type=int, default=4, help="turns per session")
    parser.add_argument("--arrival-secs", type=float, default=10.0, help="sessions arrive spread over this")
    parser.add_argument("--delays", default="150,350,150", help="benchmark STT,LLM,TTS delays in ms")
    parser.add_argument("--idle", type=int, default=10, help="idle sessions for RSS per session (0: skip)")
    parser.add_argument("--turn-timeout", type=float, default=20.0)
    parser.add_argument("--stop-below", type=float, default=0.5, help="stop the curve below this answered rate")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--voices", default=",".join(TUNING_VOICES), help=f"comma-separated, of {', '.join(VOICES)}")
    parser.add_argument("--json", type=Path, help="where to write the report")
    args = parser.parse_args()
    report = asyncio.run(bench(args))
    print(
        "\nsessions  refused  answered   v2v p50/p95/max (s)   added p95 (ms)  turn model p95"
        "  loop lag p95  loop busy p95  server CPU%  RSS MB  loadgen CPU%  stall p95/max (s)"
    )
    for run in report["runs"]:
        v2v, added, model = run["voice_to_voice"] or {}, run["added_latency"] or {}, run["turn_model"] or {}
        lag, busy = run["loop_lag_ms"] or {}, run["loop_busy"] or {}
        stall = run["playback_stall"] or {}
        print(
            f"{run['sessions']:8d}  {run['refused_sessions']:7d}  {100 * run['answered_rate']:7.2f}%  "
            f"{v2v.get('p50', float('nan')):.2f}/{v2v.get('p95', float('nan')):.2f}/{v2v.get('max', float('nan')):.2f}"
            f"        {1000 * added.get('p95', float('nan')):8.0f}  {1000 * model.get('p95', float('nan')):10.0f} ms"
            f"  {lag.get('p95', float('nan')):9.0f} ms  {100 * busy.get('p95', float('nan')):11.0f}%"
            f"  {run['server_cpu_percent']['mean']:10}  {run['server_rss_mb_max']:6}  {run['loadgen_cpu_percent']:8}"
            f"  {stall.get('p95', float('nan')):.2f}/{stall.get('max', float('nan')):.2f}"
        )
    print("\nsessions  plain: turns  v2v p50/p95 (s)   tool: turns  called once  v2v p50/p95 (s)  answer p50/p95 (s)")
    for run in report["runs"]:
        plain, tool = run["by_kind"]["plain"], run["by_kind"]["tool"]
        print(
            f"{run['sessions']:8d}  {plain['turns']:12d}  {_p50_p95(plain['voice_to_voice']):>15}"
            f"  {tool['turns']:11d}  {tool['tool_called_once']:11d}  {_p50_p95(tool['voice_to_voice']):>15}"
            f"  {_p50_p95(tool['answer_audio']):>18}"
        )
    path = args.json or result_path("capacity", report["commit"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"written to {path}")


def _p50_p95(figures: dict | None) -> str:
    return f"{figures['p50']:.2f}/{figures['p95']:.2f}" if figures else "-"


if __name__ == "__main__":
    main()
