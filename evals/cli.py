"""`python -m evals [PATHS]`: run the scripted conversation evals and write the report.

    python -m evals evals/                      # everything: text, audio, tool routing
    python -m evals evals/ --tag ci             # the fast subset CI runs
    python -m evals evals/ -k chart -k memory   # scenarios whose name contains either
    python -m evals evals/ --mode text -j 2     # typed scenarios only, two at a time

Exit status: 0 when every selected scenario passed, 1 when any failed, 2 when nothing could
be run (bad scenario file, no scenario selected).
"""

import argparse
import asyncio
import json
import shlex
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loguru import logger
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bot.providers import describe_providers
from bot.settings import Provider, Settings
from evals import report as reports
from evals.audio_mode import AudioServer
from evals.runner import DEFAULT_TIMEOUT_MS, RunContext, run_all
from evals.scenarios import discover, select

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / ".cache" / "evals"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m evals", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        default=[ROOT / "evals"],
        help="scenario files or folders (searched for *.yaml); default evals/",
    )
    parser.add_argument(
        "-k",
        "--filter",
        action="append",
        default=[],
        metavar="NAME",
        help="only scenarios whose name contains NAME (repeatable)",
    )
    parser.add_argument("--tag", action="append", default=[], help="only scenarios with this tag (repeatable)")
    parser.add_argument("--mode", choices=("text", "audio", "all"), default="all")
    parser.add_argument("-j", "--parallel", type=int, default=1, help="scenarios run at once (default 1)")
    parser.add_argument(
        "--routing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tool-routing accuracy on evals/routing_set.json (default: on, off when -k or --tag narrows the run)",
    )
    parser.add_argument("--routing-split", choices=("all", "tune", "held_out"), default="all")
    parser.add_argument(
        "--stack",
        choices=("auto", "embedded"),
        default="auto",
        help="auto: cloud services where keys are set (the settings); embedded: offline",
    )
    parser.add_argument(
        "--timeout-ms", type=int, default=DEFAULT_TIMEOUT_MS, help="budget of an expectation without within_ms"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="folder for report.json, report.md and the logs (default .cache/evals)",
    )
    parser.add_argument("--json", type=Path, help="also write the JSON report here")
    parser.add_argument("--markdown", type=Path, help="also write the Markdown report here")
    parser.add_argument("--list", action="store_true", help="list the selected scenarios and exit")
    return parser.parse_args(argv)


def settings_for(stack: str) -> Settings:
    if stack == "embedded":
        return Settings(stt_provider="embedded", llm_provider="embedded", tts_provider="embedded")
    return Settings()


async def run_routing(ctx: RunContext, split: str, progress: Progress) -> dict[str, Any]:
    # The routing bench's own functions, on the engine the text scenarios used.
    from bench import routing as bench

    items = bench.load_set()["items"]
    if split != "all":
        items = [i for i in items if i["split"] == split]
    task = progress.add_task("tool routing", total=len(items))
    started = time.monotonic()
    rows = await bench.run(
        items,
        ctx.settings,
        engine=ctx.engines.llm,
        on_item=lambda i, n, row: progress.update(task, completed=i),
    )
    summary = bench.summarize(rows)
    misses = [
        {k: r.get(k) for k in ("id", "split", "text", "tool", "chosen", "expected_arguments", "arguments")}
        for r in rows
        if not r["correct"] or r.get("arguments_ok") is False
    ]
    return {
        "set": str(bench.SET_PATH.relative_to(ROOT)),
        "items": len(items),
        "model": ctx.settings.llm_model,
        "wall_s": round(time.monotonic() - started, 1),
        "summary": summary,
        "misses": misses,
    }


async def run(args: argparse.Namespace, console: Console) -> int:
    try:
        scenarios = select(discover(args.paths), names=args.filter, tags=args.tag, mode=args.mode)
    except (ValueError, FileNotFoundError) as e:
        console.print(f"[red]cannot load scenarios:[/red] {e}")
        return 2
    if args.list:
        for s in scenarios:
            console.print(f"{s.name}  ({s.mode})  {' '.join(s.tags)}", markup=False)
        return 0 if scenarios else 2
    if not scenarios:
        console.print("[red]no scenario selected[/red]")
        return 2

    settings = settings_for(args.stack)
    routing_on = args.routing if args.routing is not None else not (args.filter or args.tag)
    embedded_llm = settings.resolved("llm") is Provider.EMBEDDED
    text = [s for s in scenarios if s.mode == "text"]
    audio = [s for s in scenarios if s.mode == "audio"]
    ctx = RunContext(settings=settings, default_timeout_ms=args.timeout_ms)
    started, started_at = time.monotonic(), datetime.now(UTC).isoformat(timespec="seconds")
    results: list[dict[str, Any]] = []
    routing: dict[str, Any] | None = None

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("scenarios", total=len(scenarios))

        def done(result: dict[str, Any]) -> None:
            mark = "[green]pass[/green]" if result["passed"] else "[red]FAIL[/red]"
            progress.console.print(f"{mark} {escape(result['name'])} ({result['mode']}, {result['duration_s']} s)")
            progress.advance(bar)

        if text or (routing_on and embedded_llm):
            from evals.text_mode import load_text_engines, text_telemetry

            progress.update(bar, description="loading the LLM")
            ctx.engines = await load_text_engines(settings)
        if text:
            progress.update(bar, description="scenarios (text)")
            ctx.telemetry = text_telemetry()
            sampler = asyncio.create_task(ctx.telemetry.sample_resources_forever())
            try:
                results += await run_all(text, ctx, parallel=args.parallel, on_done=done)
            finally:
                sampler.cancel()
        if routing_on:
            if embedded_llm:
                routing = await run_routing(ctx, args.routing_split, progress)
            else:
                routing = {"skipped": "the routing set measures the embedded LLM; a cloud LLM is configured"}
        if audio:
            progress.update(bar, description="starting the server")
            async with AudioServer(args.out, args.stack) as server:
                ctx.ws_url = server.ws_url
                progress.update(bar, description="scenarios (audio)")
                results += await run_all(audio, ctx, parallel=args.parallel, on_done=done)

    meta = {
        "command": "python -m evals " + shlex.join(sys.argv[1:]),
        "started": started_at,
        "wall_s": round(time.monotonic() - started, 1),
        "providers": describe_providers(settings),
        "parallel": args.parallel,
    }
    report = reports.build(results, routing=routing, meta=meta)
    markdown = reports.markdown(report)
    for path, content in (
        (args.out / "report.json", json.dumps(report, indent=2)),
        (args.out / "report.md", markdown),
        (args.json, json.dumps(report, indent=2)),
        (args.markdown, markdown),
    ):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    s = report["summary"]
    console.print(
        f"{s['passed']}/{s['scenarios']} scenarios passed, "
        f"{s['expectations_passed']}/{s['expectations']} expectations; report: {args.out / 'report.md'}"
    )
    if routing and not routing.get("skipped"):
        o = routing["summary"]["overall"]
        console.print(f"tool routing: {o['correct']}/{o['n']} ({o['accuracy']:.1%})")
    return 0 if s["failed"] == 0 else 1


def _interrupt(*_) -> None:
    raise KeyboardInterrupt  # unwinds the run, so the audio mode's server is stopped too


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # The pipelines log a lot; it goes to a file, the console keeps the progress and verdicts.
    logger.remove()
    logger.add(args.out / "evals.log", level="DEBUG", rotation="50 MB", retention=2)
    logger.add(sys.stderr, level="ERROR")
    return asyncio.run(run(args, Console(stderr=True)))
