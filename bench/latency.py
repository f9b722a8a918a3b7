"""Voice-to-voice latency of the embedded stack over `/ws`, measured at the client.

For each turn a spoken question streams in at real-time pace; the clock starts when the
speech itself ends (the clip's trailing silence excluded) and stops at the first non-silent
bot audio that reaches the client. Milestones seen by the client in between give the
per-stage split: turn end detected (VAD stop + Smart Turn), final transcript, first LLM
text, TTS start, first bot audio; each stage is the time from the previous milestone.

    .venv/bin/python bench/latency.py --turns 20            # starts its own server
    .venv/bin/python bench/latency.py --url ws://127.0.0.1:7860/ws
"""

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client.server_process import start_server, stop_server  # noqa: E402
from client.speech import speech_pcm, trailing_silence_seconds  # noqa: E402
from client.ws import VoiceClient  # noqa: E402

QUESTIONS = [
    "What is the capital of France?",
    "Who wrote Romeo and Juliet?",
    "What is the largest planet in our solar system?",
    "How many legs does a spider have?",
    "What color is the sky on a clear day?",
    "Which ocean is the biggest?",
    "What do bees make?",
    "Who painted the Mona Lisa?",
]
MILESTONES = [
    ("turn_end", lambda m: m.type == "user-stopped-speaking"),
    ("stt_final", lambda m: m.type == "user-transcription" and m.data.get("final")),
    ("llm_first_text", lambda m: m.type == "bot-llm-text"),
    ("tts_started", lambda m: m.type == "bot-tts-started"),
]
TURN_TIMEOUT = 30


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def measure(url: str, turns: int, pause: float) -> list[dict]:
    clips = {q: speech_pcm(q) for q in QUESTIONS}  # synthesized before any clock runs
    results = []
    async with VoiceClient(url) as client:
        await client.ready()
        await client.wait_for(lambda m: m.type == "bot-stopped-speaking", TURN_TIMEOUT)
        for i in range(turns):
            question = QUESTIONS[i % len(QUESTIONS)]
            sent = await client.say(clips[question])
            speech_end = sent - trailing_silence_seconds(clips[question])
            try:
                done = await client.wait_for(
                    lambda m: m.type == "bot-stopped-speaking", TURN_TIMEOUT, after=sent
                )
            except TimeoutError:
                results.append({"question": question, "answered": False})
                continue
            first_audio = client.first_voiced_audio_after(speech_end)
            turn = {"question": question, "answered": first_audio is not None}
            previous = speech_end
            for name, matches in MILESTONES:
                seen = next((m.at for m in client.messages if m.at >= speech_end and matches(m)), None)
                if seen is not None:
                    # Stages are consecutive: a milestone seen "before" the previous one
                    # (they overlap) counts as a zero-length stage.
                    seen = max(seen, previous)
                    turn[name] = seen - previous
                    previous = seen
            if first_audio is not None:
                turn["first_audio"] = max(first_audio, previous) - previous
                turn["voice_to_voice"] = first_audio - speech_end
            turn["answer"] = client.bot_text(sent, done.at)
            results.append(turn)
            print(
                f"turn {i + 1:2d}: v2v {turn.get('voice_to_voice', float('nan')):.3f}s  "
                f"{question!r} -> {turn['answer']!r}",
                flush=True,
            )
            await asyncio.sleep(pause)
    return results


def summarize(results: list[dict]) -> dict:
    answered = [r for r in results if "voice_to_voice" in r]
    summary = {"turns": len(results), "answered": len(answered)}
    for key in ["voice_to_voice"] + [name for name, _ in MILESTONES] + ["first_audio"]:
        values = [r[key] for r in answered if key in r]
        if values:
            summary[key] = {
                "p50": round(statistics.median(values), 3),
                "p95": round(percentile(values, 95), 3),
                "mean": round(statistics.fmean(values), 3),
            }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="an already running server's /ws URL")
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between turns")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    process = None
    url = args.url
    if not url:
        log = Path(tempfile.mkdtemp()) / "server.log"
        process, http_url = start_server(log)
        url = http_url.replace("http://", "ws://") + "/ws"
    try:
        started = time.monotonic()
        results = asyncio.run(measure(url, args.turns, args.pause))
    finally:
        if process:
            stop_server(process)
    summary = summarize(results)
    summary["wall_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "turns": results}, indent=2))


if __name__ == "__main__":
    main()
