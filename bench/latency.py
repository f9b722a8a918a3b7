"""Voice-to-voice latency of the embedded stack over `/ws`, measured at the client, per kind
of turn: plain questions, each tool's questions, and requests dictated with pauses.

Each request streams in at real-time pace, spoken by one of `client.speech.VOICES` (Piper's
Joe, the bot's own voice, and espeak-ng voices, each at two rates). The clock starts when the
speech itself ends (the clip's trailing silence excluded). Two figures per turn:

- first audio: the first non-silent bot audio that reaches the client;
- answer audio: the first bot audio of the sentence that answers, i.e. for a tool turn the
  first audio after the tool's result reached the client (an acknowledgement spoken while a
  tool runs is first audio, not the answer). For a plain turn the two are the same.

A request is split when the server recorded more than one turn for it (each part answered,
or cut off, on its own); a turn that ended at a pause and went on, unanswered, before its reply
was heard is one turn (`turn_ended_mid_request` counts those). The server's own milestones (`turn-metrics`) are kept
beside the client's figures. Each voice speaks the whole set in one session; the held-out
voices (`client.speech.HELD_OUT`) are reported apart: they are never used to tune anything.

    .venv/bin/python -m bench.latency                          # starts its own server
    .venv/bin/python -m bench.latency --set tools --voices joe,us --rounds 3
    .venv/bin/python -m bench.latency --url ws://127.0.0.1:7860/ws --json out.json

Results go to `bench/results/latency-<date>-<commit>.json` unless `--json` names a file.
"""

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.provenance import provenance, result_path
from bot.percentiles import percentile
from bot.processors.visualization import MESSAGE_TYPE, WITHDRAWN_MESSAGE_TYPE
from client.server_process import start_server, stop_server
from client.speech import HELD_OUT, VOICES, Voice, dictation_pcm, trailing_silence_seconds
from client.ws import VoiceClient


@dataclass(frozen=True)
class Request:
    kind: str  # "plain", a tool's name, or "dictated"
    parts: tuple[str, ...]  # spoken with a pause after each but the last
    tool: str | None = None  # the tool it needs, called once
    pauses: tuple[float, ...] = (0.0,)

    @property
    def text(self) -> str:
        return " ".join(self.parts)


PLAIN = [
    Request("plain", ("What is the capital of France?",)),
    Request("plain", ("Who wrote Romeo and Juliet?",)),
    Request("plain", ("What is the largest planet in our solar system?",)),
    Request("plain", ("How many legs does a spider have?",)),
    Request("plain", ("Which ocean is the biggest?",)),
    Request("plain", ("Who painted the Mona Lisa?",)),
]
TOOLS = [
    Request("get_current_time", ("What time is it in Tokyo?",), "get_current_time"),
    Request("get_current_time", ("What's the date today in Paris?",), "get_current_time"),
    Request(
        "generate_chart",
        ("Show me a bar chart of monthly sales: January 10, February 20, March 30",),
        "generate_chart",
    ),
    Request(
        "generate_chart",
        ("Make a pie chart of my budget: rent 800, food 300, travel 200",),
        "generate_chart",
    ),
    Request(
        "analyze_sentiment",
        ("Is this review positive: the food was cold and the waiter was rude",),
        "analyze_sentiment",
    ),
    Request(
        "analyze_sentiment",
        ("I absolutely love this new phone, it makes me so happy. How does that sound?",),
        "analyze_sentiment",
    ),
    Request("get_realtime_data", ("How much memory is the server using?",), "get_realtime_data"),
    Request("get_realtime_data", ("How many sessions are running right now?",), "get_realtime_data"),
]
# Requests dictated with pauses inside them (after "sales:", between the items of a list,
# after "is this positive or negative:"), each pause 0.3-0.8 s: one turn each, answered once.
_CHART, _SENTIMENT = "generate_chart", "analyze_sentiment"
DICTATED = [
    Request("dictated", parts, tool, pauses)
    for parts, tool, pauses in [
        (("Show me a bar chart of monthly sales:", "January 10,", "February 20,", "March 30"), _CHART, (0.5, 0.4, 0.6)),
        (("Make a pie chart of my budget:", "rent 800,", "food 300,", "travel 200"), _CHART, (0.8, 0.5, 0.3)),
        (
            ("Draw a line chart of visitors:", "Monday 40,", "Tuesday 55,", "Wednesday 70,", "Thursday 65"),
            _CHART,
            (0.6, 0.3, 0.7, 0.4),
        ),
        (("Is this positive or negative:", "I absolutely love my new job"), _SENTIMENT, (0.7,)),
        (("Plot my running distances:", "week one 5,", "week two 8,", "week three 12"), _CHART, (0.4, 0.8, 0.5)),
        (("What is the sentiment of this review:", "the food was cold and the waiter was rude"), _SENTIMENT, (0.5,)),
        (
            ("Chart these scores:", "Alice 90,", "Bob 75,", "Carol 82,", "Dan 60,", "Eve 95"),
            _CHART,
            (0.3, 0.6, 0.4, 0.8, 0.5),
        ),
        (("How does this sound:", "I am so tired of waiting for the bus every morning"), _SENTIMENT, (0.8,)),
        (("Make a bar chart of fruit sales:", "apples 12,", "bananas 18,", "cherries 7"), _CHART, (0.6, 0.7, 0.3)),
        (("Is this message positive:", "thank you so much for your help yesterday"), _SENTIMENT, (0.4,)),
    ]
]
SETS = {
    "plain": PLAIN,
    "tools": TOOLS,
    "dictated": DICTATED,
    "all": [r for pair in zip(PLAIN + PLAIN, TOOLS) for r in pair],
}
TURN_TIMEOUT = 40
QUIET_SECS = 1.5  # a request is done when nothing new has started for this long
RECORD_WAIT_SECS = 5.0  # for its turn record, which follows the end of its answer
RECORD_CLOCK_SLACK_SECS = 0.25  # between the client's clock reading and the server's


def _first(client: VoiceClient, after: float, until: float, kind: str) -> float | None:
    return next((m.at for m in client.messages if after <= m.at <= until and m.type == kind), None)


async def ask(client: VoiceClient, request: Request, voice: Voice) -> dict:
    pcm = dictation_pcm(request.parts, request.pauses, voice)
    sent = await client.say(pcm)
    speech_start = sent - len(pcm) / 32000
    speech_end = sent - trailing_silence_seconds(pcm)
    deadline = time.monotonic() + TURN_TIMEOUT
    done = None
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        window = [m for m in client.messages if m.at >= speech_start]
        ended = [m.at for m in window if m.type == "user-stopped-speaking"]
        bot = [m for m in window if m.type in ("bot-started-speaking", "bot-stopped-speaking")]
        answered = ended and any(m.type == "bot-started-speaking" and m.at >= ended[-1] for m in bot)
        last_start = max(
            (m.at for m in window if m.type in ("user-started-speaking", "bot-started-speaking")), default=0.0
        )
        if answered and bot[-1].type == "bot-stopped-speaking" and time.monotonic() - last_start > QUIET_SECS:
            done = bot[-1].at
            break
    turn = {
        "kind": request.kind,
        "voice": voice.name,
        "request": request.text,
        "pauses": list(request.pauses) if len(request.parts) > 1 else [],
        "answered": done is not None,
    }
    until = done if done is not None else time.monotonic()
    window = [m for m in client.messages if speech_start <= m.at <= until]
    turn["user_turns"] = sum(1 for m in window if m.type == "user-stopped-speaking")
    turn["transcripts"] = [
        m.data.get("text", "") for m in window if m.type == "user-transcription" and m.data.get("final")
    ]
    turn["tools"] = [m.data.get("function_name") for m in window if m.type == "llm-function-call-in-progress"]
    turn["answer"] = client.bot_text(speech_start, until)
    pictures = [m.data for m in window if m.type == "server-message"]
    # A reply that began as the user went on, unheard, takes its picture down again.
    withdrawn = {i for p in pictures if p.get("type") == WITHDRAWN_MESSAGE_TYPE for i in p.get("tool_call_ids", [])}
    shown = [
        p.get("visualization") or {}
        for p in pictures
        if p.get("type") == MESSAGE_TYPE and p.get("tool_call_id") not in withdrawn
    ]
    turn["visualizations"] = len(shown)
    turn["withdrawn"] = len(withdrawn)
    # What each picture drew: the values of its traces.
    turn["drawn"] = [
        [trace.get("y") or trace.get("values") for trace in (v.get("figure") or {}).get("data", [])] for v in shown
    ]
    if request.tool is not None:
        turn["tool_ok"] = turn["tools"] == [request.tool]
    first_audio = client.first_voiced_audio_after(speech_end)
    if first_audio is not None and first_audio <= until:
        turn["first_audio"] = round(first_audio - speech_end, 3)
        results = [m.at for m in window if m.type == "llm-function-call-stopped"]
        answer_audio = client.first_voiced_audio_after(results[-1]) if results else first_audio
        if answer_audio is not None and answer_audio <= until:
            turn["answer_audio"] = round(answer_audio - speech_end, 3)
    if (turn_end := _first(client, speech_end, until, "user-stopped-speaking")) is not None:
        turn["turn_end"] = round(turn_end - speech_end, 3)

    # The server stamps a turn with the Unix time it began; the previous request's record can
    # arrive after this one's speech began, and is not this request's.
    began_unix = time.time() - (time.monotonic() - speech_start) - RECORD_CLOCK_SLACK_SECS

    def records() -> list[dict]:  # sent as each turn closes, just after the bot stops speaking
        sent = [
            m.data.get("turn") or {}
            for m in client.messages
            if m.at >= speech_start and m.type == "server-message" and m.data.get("type") == "turn-metrics"
        ]
        return [record for record in sent if record.get("started_at", began_unix) >= began_unix]

    record_deadline = time.monotonic() + RECORD_WAIT_SECS
    while done is not None and not records() and time.monotonic() < record_deadline:
        await asyncio.sleep(0.1)
    server = records()
    # Split: the request left more than one turn (each part answered, or cut off, on its own).
    turn["records"] = [t.get("status") for t in server]
    turn["split"] = len(server) > 1
    if server:
        turn["server_milestones"] = (server[-1].get("latency") or {}).get("milestones", {})
    return turn


async def measure(url: str, requests: list[Request], voices: list[Voice], rounds: int) -> list[dict]:
    for voice in voices:  # synthesized before any clock runs
        for request in requests:
            dictation_pcm(request.parts, request.pauses, voice)
    turns = []
    for voice in voices:
        async with VoiceClient(url) as client:
            await client.ready()
            await client.wait_for(lambda m: m.type == "bot-stopped-speaking", TURN_TIMEOUT)
            for _ in range(rounds):
                for request in requests:
                    turn = await ask(client, request, voice)
                    turns.append(turn)
                    print(
                        f"{voice.name:>13} {request.kind:>17}: first {turn.get('first_audio', float('nan')):.2f}s"
                        f" answer {turn.get('answer_audio', float('nan')):.2f}s turns {turn['records']}"
                        f" tools {turn['tools']} {turn['transcripts']!r} -> {turn['answer']!r}",
                        flush=True,
                    )
    return turns


def figures(values: list[float]) -> dict | None:
    if not values:
        return None
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 3),
        "p95": round(percentile(values, 95), 3),
        "mean": round(statistics.fmean(values), 3),
    }


def summarize(turns: list[dict]) -> dict:
    """Per kind of turn, for the tuning voices and the held-out ones apart."""
    summary = {}
    for group, members in (
        ("tuning", lambda t: t["voice"] not in HELD_OUT),
        ("held_out", lambda t: t["voice"] in HELD_OUT),
    ):
        chosen = [t for t in turns if members(t)]
        if not chosen:
            continue
        by_kind = {}
        for kind in dict.fromkeys(t["kind"] for t in chosen):
            of_kind = [t for t in chosen if t["kind"] == kind]
            entry = {
                "requests": len(of_kind),
                "answered": sum(t["answered"] for t in of_kind),
                "split": sum(t["split"] for t in of_kind),
                "turn_ended_mid_request": sum(t["user_turns"] > 1 for t in of_kind),
                "first_audio": figures([t["first_audio"] for t in of_kind if "first_audio" in t]),
                "answer_audio": figures([t["answer_audio"] for t in of_kind if "answer_audio" in t]),
                "turn_end": figures([t["turn_end"] for t in of_kind if "turn_end" in t]),
            }
            if any("tool_ok" in t for t in of_kind):
                entry["tool_called_once"] = sum(t.get("tool_ok", False) for t in of_kind)
            by_kind[kind] = entry
        summary[group] = by_kind
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="an already running server's /ws URL")
    parser.add_argument("--set", choices=sorted(SETS), default="all")
    parser.add_argument("--voices", default="joe,us-slow", help=f"comma-separated, of {', '.join(VOICES)}")
    parser.add_argument("--rounds", type=int, default=2, help="times each voice speaks the set")
    parser.add_argument("--json", type=Path, help="where to write the results")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server it starts")
    args = parser.parse_args()
    voices = [VOICES[name] for name in args.voices.split(",")]

    process, url = None, args.url
    if not url:
        log = Path(tempfile.mkdtemp()) / "server.log"
        process, http_url = start_server(log, **dict(item.split("=", 1) for item in args.env))
        url = http_url.replace("http://", "ws://") + "/ws"
        print(f"server log: {log}", flush=True)
    started = time.monotonic()
    try:
        turns = asyncio.run(measure(url, SETS[args.set], voices, args.rounds))
    finally:
        if process:
            stop_server(process)
    report = {
        "benchmark": "latency",
        **provenance(),
        "arguments": {"set": args.set, "voices": args.voices, "rounds": args.rounds, "env": args.env},
        "wall_seconds": round(time.monotonic() - started, 1),
        "summary": summarize(turns),
    }
    print(json.dumps(report, indent=2))
    path = args.json or result_path("latency", report["commit"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**report, "turns": turns}, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
