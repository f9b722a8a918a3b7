"""Command line: `python -m bot setup` prepares the embedded models, `serve` runs the server."""

import argparse
import time

from loguru import logger

from bot.settings import get_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("setup", help="assemble, verify and convert the embedded models")
    commands.add_parser("serve", help="run the server (host and port from settings)")
    args = parser.parse_args(argv)

    if args.command == "setup":
        from bot.engines.loader import prepare_models

        started = time.monotonic()
        prepare_models(get_settings())
        logger.info(f"Embedded models ready in {time.monotonic() - started:.1f}s")
    elif args.command == "serve":
        from server import main as serve

        serve()
