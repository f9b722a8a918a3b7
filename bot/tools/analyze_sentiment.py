"""Sentiment of a text, of the user's last turn, or of the whole conversation, with VADER.

VADER (vaderSentiment) scores a text's negative, neutral and positive proportions and a
normalized compound score in [-1, 1]; its standard thresholds label a compound of 0.05 or
more positive and -0.05 or less negative.

Which words are scored: when the tool runs, the user's current request ("how did my last
message sound?") is the newest user message of the LLM context and is not in the session
record yet. So `last_turn` is the user's message *before* the request, and `conversation` is
every user message before it; only when there is no earlier message is the request itself
scored (and the summary says "your message"). Words the user wants scored in the same breath
are passed as `text` (see the routing examples). A `text` the user asks about as their own
("how did what I just said sound?") that is not word for word in anything they said was
written by the model, so their last turn is scored instead.
"""

import asyncio
import re
import threading
from functools import partial
from typing import Any

from pipecat.adapters.llm.schemas.direct_function import tool_options
from pipecat.services.llm_service import FunctionCallParams
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from bot.conversation import current_request
from bot.routing_hints import (
    argument_choices,
    only_choice,
    requested_when,
    routing_constraint,
    routing_examples,
)
from bot.tools.results import (
    MAX_POINTS,
    SayAgain,
    build_figure,
    error_result,
    keep_and_show,
    resources_for_a_result,
    rounded,
    session_resources,
    spoken_number,
)

# Refusals the user can only answer by speaking: the tool's own sentence asks, at once (a second
# LLM request only read them back, seconds later).
NO_TEXT = "I did not catch the words to score; please say them again"
NOTHING_SAID = "You have not said anything yet for me to score; say the words you want scored"
TARGETS = ("text", "last_turn", "conversation")
POSITIVE, NEGATIVE = 0.05, -0.05  # VADER's standard compound thresholds
MAX_TEXT_CHARS = 5000
SCALE = "on a scale from minus 1 to 1"

_analyzer: SentimentIntensityAnalyzer | None = None
_analyzer_lock = threading.Lock()


def analyzer() -> SentimentIntensityAnalyzer:
    """One analyzer per process (it loads VADER's lexicon), created on first use."""
    global _analyzer
    with _analyzer_lock:
        if _analyzer is None:
            _analyzer = SentimentIntensityAnalyzer()
        return _analyzer


def label_of(compound: float) -> str:
    if compound >= POSITIVE:
        return "positive"
    if compound <= NEGATIVE:
        return "negative"
    return "neutral"


def score(text: str) -> dict[str, float]:
    scores = analyzer().polarity_scores(text[:MAX_TEXT_CHARS])
    return {k: float(scores[k]) for k in ("pos", "neu", "neg", "compound")}


def _text_of(content: Any) -> str:
    if isinstance(content, list):  # multi-part content: its text parts
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content.strip() if isinstance(content, str) else ""


def user_messages(params: FunctionCallParams) -> tuple[list[str], str]:
    """(the user's earlier messages, the current request) from the LLM context; without a
    context, the recorded turns (which never hold the current request)."""
    context = getattr(params, "context", None)
    if context is not None:
        texts = [
            _text_of(m.get("content"))
            for m in context.get_messages()
            if isinstance(m, dict) and m.get("role") == "user"
        ]
        texts = [t for t in texts if t]
        return (texts[:-1], texts[-1]) if texts else ([], "")
    resources = session_resources(params)
    turns = resources.record.turns if resources else []
    return [t.user_text.strip() for t in turns if t.user_text.strip()], ""


_SPEAKS_OF_SELF = re.compile(r"\b(?:i|i'm|me|my|mine)\b", re.IGNORECASE)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']++", text.lower().replace("\u2019", "'"))


def quoted_by_user(text: str, messages: list[str]) -> bool:
    """Whether `text` is, word for word, part of something the user said."""
    words = _words(text)
    if not words:
        return False
    # Whole words as one string: a substring search, linear in what was said.
    quoted = f" {' '.join(words)} "
    return any(quoted in f" {' '.join(_words(message))} " for message in messages)


def _excerpt(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _single(text: str, subject: str, title: str) -> dict[str, Any]:
    scores = score(text)
    label = label_of(scores["compound"])
    values = [scores["pos"], scores["neu"], scores["neg"], scores["compound"]]
    labels = ["positive", "neutral", "negative", "compound"]
    series = [{"name": "score", "values": values}]
    summary = (
        f"{subject} sounds {label}, with a compound score of {spoken_number(round(scores['compound'], 2))} {SCALE}."
    )
    return {
        "title": title,
        "label": label,
        "scores": scores,
        "text": _excerpt(text, 200),
        "labels": labels,
        "series": series,
        "figure": build_figure("bar", title, labels, series, y_title="score", y_range=(-1, 1)),
        "summary": summary,
        "key_figures": {
            "label": label,
            "compound": rounded(scores["compound"]),
            "positive": rounded(scores["pos"]),
            "neutral": rounded(scores["neu"]),
            "negative": rounded(scores["neg"]),
        },
    }


def _conversation(texts: list[str]) -> dict[str, Any]:
    texts = texts[-MAX_POINTS:]
    per_message = [score(t) for t in texts]
    compounds = [s["compound"] for s in per_message]
    labels = [f"Message {i + 1}" for i in range(len(texts))]
    series = [{"name": "compound", "values": compounds}]
    average = sum(compounds) / len(compounds)
    label = label_of(average)
    title = "Sentiment over the conversation"
    hi = max(range(len(compounds)), key=lambda k: compounds[k])
    lo = min(range(len(compounds)), key=lambda k: compounds[k])
    summary = (
        f"Across your {len(texts)} messages the mood is {label} on average, with a compound "
        f"score of {spoken_number(round(average, 2))} {SCALE}"
    )
    if compounds[hi] != compounds[lo]:
        summary += f"; message {hi + 1} was the most positive and message {lo + 1} the most negative"
    figure = build_figure("line", title, labels, series, y_title="compound score", y_range=(-1, 1))
    figure["data"][0]["text"] = [_excerpt(t) for t in texts]  # the words, on hover
    return {
        "title": title,
        "label": label,
        "average_compound": average,
        "messages": [
            {"text": _excerpt(t, 200), "label": label_of(s["compound"]), **s} for t, s in zip(texts, per_message)
        ],
        "labels": labels,
        "series": series,
        "figure": figure,
        "summary": summary + ".",
        "key_figures": {
            "messages": len(texts),
            "label": label,
            "average_compound": rounded(average),
            "most_positive": labels[hi],
            "most_negative": labels[lo],
        },
    }


_POINTS_AT_WORDS = re.compile(r"\b(?:this|these|that|the following|it)\b", re.IGNORECASE)


MAX_QUOTED_WORDS = 60  # longer requests are not narrowed: the spans grow as words squared
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s++")
_REFERS_TO_EARLIER = re.compile(r"\b(?:last|previous|earlier|before|conversation)\b", re.IGNORECASE)


def quoted_text(request: str) -> str:
    """The words a request gives to be judged, read from the request itself: what follows
    its colon ("Is this review positive: the food was cold"), or its sentences that do not
    ask for the judgement ("I love this phone. How does that sound?"); "" when it gives none
    ("How did my last message sound?")."""
    if len(request) > MAX_TEXT_CHARS:
        return ""
    head, colon, tail = request.partition(":")
    if colon and _ASKS.search(head) and len(tail.split()) >= 2:
        return tail.strip()
    # "Is this review positive, the food was cold": a transcript writes the pause after the
    # question that points at the words as a comma.
    head, comma, tail = request.partition(",")
    if comma and _ASKS.search(head) and _POINTS_AT_WORDS.search(head) and not _ASKS.search(tail):
        if len(tail.split()) >= 2:
            return tail.strip()
    sentences = [s for s in _SENTENCE_BREAK.split(request.strip()) if s.strip()]
    given = [s for s in sentences if not _ASKS.search(s)]
    if given and len(given) < len(sentences):
        return " ".join(given)
    # One sentence whose last clause asks about the words before it ("I love this phone, it
    # makes me happy, how does that sound?"; not "..., how do I sound?"): a transcript writes
    # the pause before the question as a comma.
    words, comma, asks = request.strip().rpartition(",")
    if (
        comma
        and _ASKS.search(asks)
        and not _SPEAKS_OF_SELF.search(asks)
        and not _ASKS.search(words)
        and len(words.split()) >= 2
    ):
        return words.strip()
    return ""


def sentiment_goes_on(words: str) -> bool:
    """Whether a request asks to judge words it has not given yet: "Is this review positive?"
    before the review ("How did my last message sound?" names its words)."""
    return (
        bool(_ASKS.search(words))
        and bool(_POINTS_AT_WORDS.search(words))
        and not _REFERS_TO_EARLIER.search(words)
        and not quoted_text(words)
    )


def sentiment_is_whole(words: str) -> bool:
    """Whether a request asks for a judgement and gives the words to judge."""
    return bool(_ASKS.search(words)) and bool(quoted_text(words))


def quoted_text_constraint(messages: list[dict], parameters: dict[str, Any]) -> dict[str, Any]:
    """The text to analyze is words of the current request, never words made up or taken
    from elsewhere (a small model otherwise copies an example's sentence). When the request
    itself says which words, the call does not copy them: the tool reads them there."""
    request = current_request(messages)
    if quoted_text(request):
        properties = {k: v for k, v in parameters["properties"].items() if k != "text"}
        return only_choice({**parameters, "properties": properties}, target="text")
    words = request.split()
    if not words or len(words) > MAX_QUOTED_WORDS:
        return parameters
    spans = {
        variant
        for start in range(len(words))
        for end in range(start + 1, len(words) + 1)
        for span in [" ".join(words[start:end])]
        for variant in (span, span.rstrip(".!?"))
        if variant
    }
    properties = {**parameters["properties"]}
    properties["text"] = {**properties["text"], "enum": sorted(spans)}
    return {**parameters, "properties": properties}


# A request for an assessment names it (sentiment, tone, positive, how it sounds, ...) or what
# is to be judged (this review, my last message); "I'm so happy today!" shares a feeling, and
# is answered, not analyzed.
ASKS_FOR_SENTIMENT = (
    r"\b(sentiments?+|tone|mood|positive|negative|neutral|analy[sz]\w*+|classify|score|rate|rating"
    r"|good or bad|happy or sad|sound\w*+|c[oa]me across|emotion\w*+"
    r"|review|comment|tweet|message|sentence)\b"
)
_ASKS = re.compile(ASKS_FOR_SENTIMENT, re.IGNORECASE)


@tool_options(timeout_secs=4.0)
@argument_choices(target=TARGETS)
@routing_constraint(requested_when(ASKS_FOR_SENTIMENT))
@routing_constraint(quoted_text_constraint)
@routing_examples(
    ("How did my last message sound?", {"target": "last_turn"}),
    (
        "Is this review positive: the food was cold and the waiter was rude",
        {"target": "text", "text": "the food was cold and the waiter was rude"},
    ),
    ("How has my mood been during our conversation?", {"target": "conversation"}),
)
async def analyze_sentiment(params: FunctionCallParams, target: str = "last_turn", text: str = ""):
    """Analyze the sentiment (positive, neutral or negative) of a text or of what the user said.

    Args:
        target: last_turn (what the user said before this request), conversation (all the user said) or text (words given in this request).
        text: The words given in this request, when target is text.
    """
    resources = await resources_for_a_result(params, "sentiment analysis")
    if resources is None:
        return
    target = (target or "last_turn").strip().lower()
    text = (text or "").strip()
    if target not in TARGETS:
        await params.result_callback({"error": f"unknown target {target!r}; use text, last_turn or conversation"})
        return
    if target == "last_turn" and text:
        target = "text"  # words given in the call are what the user wants scored
    earlier, current = user_messages(params)
    if (
        target == "text"
        and text
        and current
        and _SPEAKS_OF_SELF.search(current)
        and not quoted_by_user(text, [*earlier, current])
    ):
        # "How did what I just said sound?": a small model sometimes writes a sentence of its
        # own as the text. The user asks about their own words, so score those instead.
        target, text = "last_turn", ""
    context = getattr(params, "context", None)
    quoted = quoted_text(current_request(context.get_messages())) if context is not None else ""
    if quoted and not text and (target == "text" or not _REFERS_TO_EARLIER.search(current)):
        # The request gave its words ("I love this phone. How does that sound?"): those.
        target, text = "text", quoted

    if target == "text":
        if not text:
            await params.result_callback(error_result(SayAgain(NO_TEXT)))
            return
        compute = partial(_single, text, "That text", "Sentiment of the text")
    elif target == "last_turn":
        if earlier:
            message, subject = earlier[-1], "Your last message"
        elif current:
            message, subject = current, "Your message"
        else:
            await params.result_callback(error_result(SayAgain(NOTHING_SAID)))
            return
        compute = partial(_single, message, subject, "Sentiment of your last message")
    else:
        messages = earlier or ([current] if current else [])
        if not messages:
            await params.result_callback(error_result(SayAgain(NOTHING_SAID)))
            return
        if len(messages) == 1:
            compute = partial(_single, messages[0], "Your only message so far", "Sentiment of the conversation")
        else:
            compute = partial(_conversation, messages)

    result = await asyncio.to_thread(compute)
    key_figures = result.pop("key_figures")
    result["target"] = target
    result_id = keep_and_show(
        params,
        resources,
        kind="sentiment",
        visualization_type="sentiment",
        data=result,
        # The page shows which words were scored (one text; a conversation's are per point).
        extra={"label": result["label"], "target": target, "text": result.get("text", "")},
    )
    await params.result_callback({"result_id": result_id, "summary": result["summary"], "key_figures": key_figures})
