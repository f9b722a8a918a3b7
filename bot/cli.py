"""Command line: `python -m bot setup` prepares the embedded models, `report` writes the cost and
resource report over the stored sessions. The server itself runs with `python server.py`."""

import argparse
import asyncio
import json
import time
from pathlib import Path

from loguru import logger

from bot.settings import get_settings, settings_or_exit


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("setup", help="assemble, verify and convert the embedded models")
    report = commands.add_parser("report", help="cost and resource report of the stored sessions")
    report.add_argument("--format", choices=("json", "markdown"), default="markdown")
    report.add_argument("--out", type=Path, help="write the report to this file, not stdout")
    report.add_argument("--days", type=float, help="only the sessions of the last N days")
    args = parser.parse_args(argv)
    settings_or_exit()

    if args.command == "setup":
        from bot.providers import prepare_models

        started = time.monotonic()
        prepare_models(get_settings())
        logger.info(f"Embedded models ready in {time.monotonic() - started:.1f}s")
    elif args.command == "report":
        from bot.store import SchemaTooNewError

        try:
            text = asyncio.run(_report(args.format, args.days))
        except SchemaTooNewError as e:
            raise SystemExit(f"Cannot report: {e}") from None
        if args.out:
            args.out.write_text(text)
            logger.info(f"Report written to {args.out}")
        else:
            print(text)


async def _report(fmt: str, days: float | None) -> str:
    from bot.report import build_report, render_markdown
    from bot.store import create_store

    settings = get_settings()
    store = create_store(settings.records_path)
    await store.open()
    try:
        report = await build_report(store, since_days=days, prices=settings.prices)
    finally:
        await store.close()
    return json.dumps(report, indent=2) if fmt == "json" else render_markdown(report)
