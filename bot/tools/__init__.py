"""The tools every LLM provider gets: plain async functions whose docstrings are their schema."""

import re

from bot.tools.analyze_sentiment import analyze_sentiment, sentiment_goes_on
from bot.tools.current_time import get_current_time
from bot.tools.generate_chart import chart_goes_on, generate_chart
from bot.tools.get_realtime_data import get_realtime_data

ALL_TOOLS = [get_current_time, generate_chart, analyze_sentiment, get_realtime_data]

# A clause or a list left open: "... rent 800," or "... the food was cold and".
TRAILING_OPEN = re.compile(r"(?:[,:;]|\b(?:and|or|but|then|plus|with))\W*+$", re.IGNORECASE)


def request_goes_on(words: str) -> bool:
    """Whether the words of a request heard so far say more is coming: a turn that would end
    here waits a little longer (`AGENT_DICTATION_HOLD_SECS`)."""
    text = words.strip()
    return bool(TRAILING_OPEN.search(text)) or chart_goes_on(text) or sentiment_goes_on(text)
