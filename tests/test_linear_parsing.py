"""Every pattern that reads user or model text cannot backtrack: each repeat is possessive
(or a fixed count), so its cost is linear in what it reads whatever the input. These tests
check the guarantee itself (the patterns' shapes and the caps), not wall-clock time; timing
under hostile input belongs to the fuzz command."""

import re._constants as sre_constants
import re._parser as sre_parse

import pytest

from bot.auth import _TOKEN_IN_URL
from bot.providers.speakable import _EMOJI
from bot.providers.tool_routing import _ANSWER_PREFIX, _TOOL_NAME
from bot.tools import TRAILING_OPEN
from bot.tools.analyze_sentiment import (
    _POINTS_AT_WORDS,
    _REFERS_TO_EARLIER,
    _SENTENCE_BREAK,
    ASKS_FOR_SENTIMENT,
    quoted_by_user,
)
from bot.tools.current_time import _PLACE_FOLLOWS, ASKS_FOR_TIME
from bot.tools.generate_chart import _ASKS_FOR_CHART, _ASKS_WHAT, _NAMES_CHART_TYPE, _PIECE_BREAK
from bot.tools.get_realtime_data import ASKS_FOR_LIVE_DATA, METRIC_CUES
from bot.tools.spoken_numbers import MAX_DICTATION_CHARS, PARSERS, said_pairs

pytestmark = pytest.mark.unit

BACKTRACKING = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT)

PATTERNS = {
    **{f"chart parser {p.pattern[:30]!r}": p.pattern for p in PARSERS},
    "sentiment cue": ASKS_FOR_SENTIMENT,
    "sentence break": _SENTENCE_BREAK.pattern,
    "words still to judge": _POINTS_AT_WORDS.pattern,
    "a chart asked for": _ASKS_FOR_CHART.pattern,
    "a wh-question": _ASKS_WHAT.pattern,
    "an open clause": TRAILING_OPEN.pattern,
    "refers to an earlier message": _REFERS_TO_EARLIER.pattern,
    "time cue": ASKS_FOR_TIME,
    "live data cue": ASKS_FOR_LIVE_DATA,
    "answer prefix": _ANSWER_PREFIX.pattern,
    "tool name": _TOOL_NAME.pattern,
    "token in a logged URL": _TOKEN_IN_URL.pattern,
    "emoji": _EMOJI.pattern,
    "a place asked about": _PLACE_FOLLOWS.pattern,
    "a chart type named": _NAMES_CHART_TYPE.pattern,
    "a pause in a dictated list": _PIECE_BREAK.pattern,
    **{f"the {metric} metric named": cue.pattern for metric, cue in METRIC_CUES.items()},
}


def backtracking_repeats(pattern: str) -> list[str]:
    """Each repeat in `pattern` that can give characters back (a greedy or lazy `*`, `+`,
    `?` or `{m,n}` with m < n), as the regex parser sees it."""
    found = []

    def walk(items) -> None:
        for op, arg in items:
            if op in BACKTRACKING:
                low, high, body = arg
                if low != high:
                    found.append(f"{op} {low}..{high} of {body}")
                walk(body)
            elif op == sre_constants.POSSESSIVE_REPEAT:
                walk(arg[2])
            elif op in (sre_constants.SUBPATTERN,):
                walk(arg[3])
            elif op == sre_constants.ATOMIC_GROUP:
                walk(arg)
            elif op == sre_constants.BRANCH:
                for branch in arg[1]:
                    walk(branch)

    walk(sre_parse.parse(pattern))
    return found


def test_the_shape_check_sees_a_backtracking_pattern():
    assert backtracking_repeats(r"^\s*(?P<label>[^:]*?[a-z][^:]*?)\s*\d+$")
    assert not backtracking_repeats(r"^\s*+(?P<label>[^:]*+)\d{3}(?:x|y)?+$")


@pytest.mark.parametrize("name", list(PATTERNS))
def test_parsers_of_user_and_model_text_cannot_backtrack(name):
    assert backtracking_repeats(PATTERNS[name]) == []


def test_a_request_longer_than_a_dictation_is_not_read_for_pairs():
    pairs = "January 10, February 20, March 30"
    assert said_pairs(f"chart of sales: {pairs}")
    padding = " " * (MAX_DICTATION_CHARS - len(pairs))
    assert said_pairs(f"chart of sales:{padding}{pairs}") is None


def test_runs_of_spaces_and_the_old_worst_cases_parse_as_before():
    # "a" + 800 spaces + "x" took 7.3 s with the old backtracking pattern.
    assert said_pairs("a" + " " * 800 + "x") is None
    assert said_pairs("sales: rent" + " " * 300 + "900, food   300") == ("", ["rent", "food"], [900, 300])


def test_quoted_text_is_found_as_whole_words():
    said = ["I said the food was cold and the waiter was rude, honestly"]
    assert quoted_by_user("The food was cold", said)
    assert not quoted_by_user("he food was cold", said)  # "the", not "he"
    assert not quoted_by_user("waiter was rude honestly too", said)
    long_said = [" ".join(["word"] * 5000) + " end"]
    assert quoted_by_user(" ".join(["word"] * 2000) + " end", long_said)
