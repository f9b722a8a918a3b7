"""Plays scenarios with Pipecat's own scripted-eval driver and matcher, and gathers results.

`pipecat.evals.script_driver.EvalScriptDriver` sends each turn (honouring `send_after`), then
matches the turn's expectations in order with `ExpectationMatcher`, all within one deadline
anchored when the turn was sent: `within_ms` is a latency budget from the typed turn, or from
the start of the spoken one (as in Pipecat; the report's voice-to-voice figures start at the end
of the speech). The driver talks to a "client": `TextSession` (text mode) or `AudioSession`
(audio mode), and reads the events `evals.events` makes of the bot's RTVI messages.
"""

import asyncio
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loguru import logger
from pipecat.evals.events import EvalEventStream
from pipecat.evals.results import EvalAssertionFailure, EvalScriptResult, EvalTrace
from pipecat.evals.script_driver import EvalScriptDriver

from bot.providers import EmbeddedEngines
from bot.settings import Settings
from bot.telemetry import Telemetry
from evals.audio_mode import AudioSession
from evals.events import MessageEvents
from evals.scenarios import Scenario
from evals.text_mode import TextSession

DEFAULT_TIMEOUT_MS = 60000


class ScriptDriver(EvalScriptDriver):
    """Pipecat's driver; a turn that does not talk over the bot also waits for its reply to end.

    Pipecat's driver holds a turn while the bot *speaks*; a text reply is never spoken, and a
    spoken one may not have started yet when the previous turn's expectations were met, so the
    client's `wait_idle` (the reply finished, or the server closed the spoken turn) is added.
    A turn with `send_after` (barge-in) is sent when its event fires, as in Pipecat.
    """

    async def _await_bot_quiet(self) -> None:
        await self._client.wait_idle()
        await super()._await_bot_quiet()


@dataclass
class RunContext:
    settings: Settings
    engines: EmbeddedEngines | None = None  # text mode
    telemetry: Telemetry | None = None  # text mode
    ws_url: str = ""  # audio mode
    default_timeout_ms: int = DEFAULT_TIMEOUT_MS


def _text_latency(session: TextSession) -> list[dict[str, float]]:
    """Per typed turn, seconds from the send: first output (text or tool call), tool calls,
    first text of the answer, answer complete."""
    turns = []
    for i, sent in enumerate(session.sent_at):
        end = session.sent_at[i + 1] if i + 1 < len(session.sent_at) else float("inf")
        window = [(at, m) for at, m in session.messages if sent <= at < end]
        first = {
            kind: next((at for at, m in window if m.get("type") == kind), None)
            for kind in ("bot-llm-text", "llm-function-call-in-progress")
        }
        outputs = [t for t in first.values() if t is not None]
        calls_done = [at for at, m in window if m.get("type") == "llm-function-call-stopped"]
        texts_after_tools = [
            at for at, m in window if m.get("type") == "bot-llm-text" and (not calls_done or at >= calls_done[-1])
        ]
        stopped = [at for at, m in window if m.get("type") == "bot-llm-stopped"]
        stages: dict[str, float] = {}
        if outputs:
            stages["first_output"] = min(outputs) - sent
        if first["llm-function-call-in-progress"] is not None and calls_done:
            stages["tool_calls"] = calls_done[-1] - first["llm-function-call-in-progress"]
        if texts_after_tools:
            stages["first_answer_text"] = texts_after_tools[0] - sent
        if stopped and texts_after_tools:
            stages["answer_complete"] = stopped[-1] - sent
        turns.append({k: round(v, 3) for k, v in stages.items()})
    return turns


def _audio_latency(session: AudioSession) -> list[dict[str, float]]:
    """Per spoken turn: the server's stages (`turn-metrics`), its total, and the client's
    end of speech -> first voiced bot audio."""
    turns = []
    for record in session.turn_records():
        latency = record.get("latency") or {}
        stages = dict(latency.get("stages") or {})
        if latency.get("total") is not None:
            stages["server_total"] = latency["total"]
        turns.append({k: round(v, 3) for k, v in stages.items()})
    for turn, v2v in zip(turns, session.voice_to_voice()):
        turn["voice_to_voice"] = round(v2v, 3)
    return turns


def _expectations(scenario: Scenario, result: EvalScriptResult) -> list[dict[str, Any]]:
    turns = []
    for index, turn in enumerate(scenario.script.turns):
        record = result.turns[index] if index < len(result.turns) else None
        resolved = {e.expectation_index: e for e in (record.expectations if record else [])}
        failures = {f.expectation_index: f for f in (record.failures if record else [])}
        expectations = []
        for exp_index, exp in enumerate(turn.expect):
            entry: dict[str, Any] = {"index": exp_index, "event": exp.event}
            if exp_index in failures:
                f = failures[exp_index]
                entry.update(status="failed", reason=f.reason, kind=f.kind)
            elif exp_index in resolved:
                entry.update(status="passed", matched=resolved[exp_index].matched)
            else:
                entry.update(status="not_run")
            expectations.append(entry)
        turn_failures = [{"reason": f.reason, "kind": f.kind} for f in failures.values() if f.expectation_index < 0]
        turns.append(
            {
                "index": index,
                "user": turn.user,
                "status": record.status if record else "not_run",
                "duration_ms": record.duration_ms if record else 0,
                "expectations": expectations,
                **({"failures": turn_failures} if turn_failures else {}),
            }
        )
    return turns


async def run_scenario(scenario: Scenario, ctx: RunContext) -> dict[str, Any]:
    trace = EvalTrace()
    trace.start()
    stream = EvalEventStream(bot_audio=False, trace=trace)
    events = MessageEvents(stream, trace)
    if scenario.mode == "text":
        session = TextSession(ctx.settings, ctx.engines, events.feed, ctx.telemetry)
    else:
        session = AudioSession(ctx.ws_url, scenario.script.user_speech or {}, events.feed)

    async def progress(_record) -> None:
        pass

    driver = ScriptDriver(
        scenario=scenario.script,
        default_timeout_ms=ctx.default_timeout_ms,
        client=session,
        stream=stream,
        judge=None,
        trace=trace,
        progress=progress,
    )
    started = time.monotonic()
    failures: list[EvalAssertionFailure] = []
    try:
        async with session:
            failures = await driver.run()
            await session.wait_idle()  # the last reply's end (and its turn-metrics) too
    except Exception as e:  # noqa: BLE001 -- a broken session fails its scenario, not the run
        logger.exception(f"{scenario.name}: harness error")
        failure = EvalAssertionFailure(max(trace.turn, 0), -1, "harness", f"{type(e).__name__}: {e}", "harness_error")
        driver.record_failure(failure)
        failures.append(failure)
        trace.log(traceback.format_exc())
    result = driver.result(
        failures=failures,
        duration_ms=int((time.monotonic() - started) * 1000),
        events_seen=stream.events_seen,
        debug_log=trace.lines,
    )
    latency = _text_latency(session) if scenario.mode == "text" else _audio_latency(session)
    return {
        "name": scenario.name,
        "file": str(scenario.script.source_path),
        "mode": scenario.mode,
        "tags": scenario.tags,
        "passed": result.passed,
        "duration_s": round(result.duration_ms / 1000, 2),
        "turns": _expectations(scenario, result),
        "failures": [
            {
                "turn": f.turn_index,
                "expectation": f.expectation_index,
                "event": f.event_name,
                "reason": f.reason,
                "kind": f.kind,
            }
            for f in result.failures
        ],
        "latency": latency,
        "tool_calls": [
            {"name": e.get("name"), "args": e.get("args")}
            for e in result.events_seen
            if e.get("type") == "function_call"
        ],
        "debug_log": [] if result.passed else result.debug_log,
    }


async def run_all(
    scenarios: list[Scenario],
    ctx: RunContext,
    *,
    parallel: int,
    on_done: Callable[[dict[str, Any]], None],
) -> list[dict[str, Any]]:
    """Every scenario, at most `parallel` at once; results in the scenarios' order."""
    gate = asyncio.Semaphore(max(1, parallel))

    async def one(scenario: Scenario) -> dict[str, Any]:
        async with gate:
            result = await run_scenario(scenario, ctx)
        on_done(result)
        return result

    return list(await asyncio.gather(*(one(s) for s in scenarios)))
