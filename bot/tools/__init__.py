"""The tools every LLM provider gets: plain async functions whose docstrings are their schema."""

from bot.tools.analyze_sentiment import analyze_sentiment
from bot.tools.current_time import get_current_time
from bot.tools.generate_chart import generate_chart
from bot.tools.get_realtime_data import get_realtime_data

ALL_TOOLS = [get_current_time, generate_chart, analyze_sentiment, get_realtime_data]
