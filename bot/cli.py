"""Command line: `python -m bot setup` prepares the embedded models, `serve` runs the server,
`report` writes the cost and resource report over the stored sessions."""

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from loguru import logger
from pydantic import ValidationError

from bot.settings import get_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("setup", help="assemble, verify and convert the embedded models")
    commands.add_parser("serve", help="run the server (host and port from settings)")
    report = commands.add_parser("report", help="cost and resource report of the stored sessions")
    report.add_argument("--format", choices=("json", "markdown"), default="markdown")
    report.add_argument("--out", type=Path, help="write the report to this file, not stdout")
    report.add_argument("--days", type=float, help="only the sessions of the last N days")
    args = parser.parse_args(argv)
    try:
        get_settings()
    except ValidationError as e:  # say what is wrong with the configuration, not a traceback
        problems = "\n".join(f"  {error['msg']}" for error in e.errors())
        print(f"Invalid configuration:\n{problems}", file=sys.stderr)
        sys.exit(2)

    if args.command == "setup":
        from bot.engines.loader import prepare_models

        started = time.monotonic()
        prepare_models(get_settings())
        logger.info(f"Embedded models ready in {time.monotonic() - started:.1f}s")
    elif args.command == "serve":
        # Before the server's modules are imported: some of them log as they load.
        logger.remove()
        logger.add(sys.stderr, level=get_settings().log_level)
        from server import main as serve

        serve()
    elif args.command == "report":
        text = asyncio.run(_report(args.format, args.days))
        if args.out:
            args.out.write_text(text)
            logger.info(f"Report written to {args.out}")
        else:
            print(text)


async def _report(fmt: str, days: float | None) -> str:
    from bot.report import build_report, render_markdown
    from bot.store import SessionStore

    settings = get_settings()
    store = SessionStore(settings.records_path)
    await store.open()
    try:
        report = await build_report(store, since_days=days, prices=settings.prices)
    finally:
        await store.close()
    return json.dumps(report, indent=2) if fmt == "json" else render_markdown(report)
