"""The tools every LLM provider gets: plain async functions whose docstrings are their schema."""

import re

from bot.tools.analyze_sentiment import analyze_sentiment, analyzer, sentiment_goes_on, sentiment_is_whole
from bot.tools.current_time import get_current_time
from bot.tools.generate_chart import CHART_TYPES, chart_goes_on, generate_chart
from bot.tools.get_realtime_data import get_realtime_data
from bot.tools.results import build_figure

ALL_TOOLS = [get_current_time, generate_chart, analyze_sentiment, get_realtime_data]

# A clause or a list left open: "... rent 800," or "... the food was cold and".
TRAILING_OPEN = re.compile(r"(?:[,:;]|\b(?:and|or|but|then|plus|with))\W*+$", re.IGNORECASE)


def request_goes_on(words: str) -> bool:
    """Whether the words of a request heard so far say more is coming: a turn that would end
    here waits a little longer (`AGENT_DICTATION_HOLD_SECS`)."""
    text = words.strip()
    return bool(TRAILING_OPEN.search(text)) or chart_goes_on(text) or sentiment_goes_on(text)


def request_is_whole(words: str) -> bool:
    """Whether the words of a request heard so far already ask for something whole: a question
    ("What time is it?") or a judgement of words it gives ("Is this review positive, the food
    was cold."), and nothing in them says more is coming. A turn Smart Turn hears as unfinished
    then ends soon after its verdict (`AGENT_QUESTION_END_SECS`), not at its silence fallback."""
    text = words.strip()
    if not text or request_goes_on(text):
        return False
    return text.endswith("?") or (text.endswith(".") and sentiment_is_whole(text))


def warm_up() -> None:
    """Do at start what the tools otherwise do on their first call in the process: Plotly
    loads a trace type's validators the first time one is drawn (the first chart of a fresh
    server answered 0.37 s later than the next), and VADER reads its lexicon."""
    for chart_type in CHART_TYPES:
        build_figure(chart_type, "", ["a", "b"], [{"name": "", "values": [1.0, 2.0]}])
    analyzer()
