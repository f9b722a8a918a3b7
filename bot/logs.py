"""The server's log, at the level the settings name, from its first line: `server.py` imports
this module before anything else, because Pipecat logs as it is imported (at DEBUG, which the
default level keeps out of the log). Invalid settings stop the server here, named."""

import sys

from loguru import logger

from bot.settings import settings_or_exit

logger.remove()
logger.add(sys.stderr, level=settings_or_exit().log_level)
