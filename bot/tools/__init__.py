"""The tools every LLM provider gets: plain async functions whose docstrings are their schema."""

from bot.tools.current_time import get_current_time

ALL_TOOLS = [get_current_time]
