"""Numbers and "label number" pairs read from what the user said ("January 10, February
twenty"), so that a chart draws the user's own values rather than a small model's re-typing."""

import math
import re

# --- the user's own words ---------------------------------------------------------------------
# A small model sometimes invents numbers (copied from a routing example) or re-types an
# earlier result instead of naming it, and sometimes names an earlier result while the user is
# dictating new data. Typed numbers are therefore checked against what the user actually said,
# and "label number" pairs the user dictated are read straight from their words.

_SMALL = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen".split()
    )
}
_TENS = {w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_SCALES = {"hundred": 100, "thousand": 1e3, "k": 1e3, "million": 1e6, "billion": 1e9}
# Every pattern that reads user or model text repeats only possessively (`*+`, `++`, `?+`) and
# is used with `match`/`fullmatch` on a bounded piece: no input can make it backtrack, so its
# cost is linear in what it reads (tests/test_tools.py checks the shapes). A chunk of a
# dictated list is taken apart word by word from its end rather than by one regex.
_DIGITS = r"\d{1,3}+(?:,\d{3})++(?:\.\d++)?+|\d++(?:\.\d++)?+|\.\d++"
_TOKENS = re.compile(rf"{_DIGITS}|[a-z]++|[%,;.]")
_AMOUNT = re.compile(rf"(?P<sign>-)?+[$€£]?+(?P<number>{_DIGITS})")
_CHUNK_BREAK = re.compile(r",\s++|;|\band\b|\.\s")
_TITLE = re.compile(r"\b(?:chart|graph|plot)\s++(?:of|for|on|about|showing|with)\s++(?P<title>.++)", re.I)
_SEPARATORS = {"=", ":", "is", "was", "at", "with"}
# A speech recogniser writes a number word it half heard as a word that sounds like it ("travel
# to hundred", "food free hundred", "rent it hundred"); before a scale word, where no other
# reading is English, the number is meant.
_HEARD_AS_NUMBER = {"to": "two", "too": "two", "for": "four", "free": "three", "tree": "three"}
_HEARD_AS_NUMBER |= {"ate": "eight", "it": "eight", "won": "one"}
_NUMBER_WORD = "|".join([*_SMALL, *_TENS, *_HEARD_AS_NUMBER])
_LABEL_DASH_NUMBER = re.compile(rf"(?<=[a-z])-(?=\d|(?:{_NUMBER_WORD})\b)", re.IGNORECASE)
_MISHEARD_BEFORE_SCALE = re.compile(
    rf"\b(?P<word>{'|'.join(_HEARD_AS_NUMBER)})(?P<space>\s++)(?=(?:hundred|thousand|million|billion)\b)",
    re.IGNORECASE,
)
# The longest request read for dictated pairs: far above a spoken list of values (a six-value
# chart request is ~120 characters); a longer one is not a dictation, and the model's typed
# values are used, checked against the numbers said.
MAX_DICTATION_CHARS = 1000
PARSERS = (
    _TOKENS,
    _AMOUNT,
    _CHUNK_BREAK,
    _TITLE,
    _LABEL_DASH_NUMBER,
    _MISHEARD_BEFORE_SCALE,
)  # for the shape test (tests/test_linear_parsing.py)


def heard_as_numbers(text: str) -> str:
    """`text` with the number words a recogniser misheard before a scale word put back
    ("rent it hundred" -> "rent eight hundred")."""
    return _MISHEARD_BEFORE_SCALE.sub(lambda m: _HEARD_AS_NUMBER[m["word"].lower()] + m["space"], text)


def said_numbers(text: str) -> set[float]:
    """Every number in `text`, in digits or words ("twenty five", "1.2 million", "30%"), with
    the variants a model may type for it (its scaled or percent form); signs are ignored."""
    return set(said_number_list(text))


def said_number_list(text: str) -> list[float]:
    """`said_numbers` in the order said, each as often as said (a variant beside its number)."""
    found: list[float] = []
    tokens = _TOKENS.findall(heard_as_numbers(text).lower())
    total = current = 0.0
    in_words = False

    def flush() -> None:
        nonlocal total, current, in_words
        if in_words:
            found.append(total + current)
        total = current = 0.0
        in_words = False

    for i, token in enumerate(tokens):
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        if token[0].isdigit() or (token[0] == "." and token[1:2].isdigit()):
            flush()
            number = float(token.replace(",", ""))
            found.append(number)
            if following in _SCALES:
                found.append(number * _SCALES[following])
            if following in ("%", "percent"):
                found.append(number / 100)
        elif token in _SMALL or token in _TENS:
            # "five three" or "twenty thirty" are two numbers; "twenty five" is one.
            units_taken = current % 100 % 10 or 10 <= current % 100 < 20
            if in_words and (units_taken or (token in _TENS and current % 100)):
                flush()
            current += _SMALL.get(token, 0) + _TENS.get(token, 0)
            in_words = True
        elif token == "a" and following in ("hundred", "thousand", "million", "billion"):
            flush()
            current, in_words = 1.0, True  # "a hundred"
        elif token == "hundred" and in_words:
            current = max(current, 1) * 100
        elif token in ("thousand", "million", "billion") and in_words:
            found.append(total + current)  # "67 million" may be typed as 67, as with digits
            total += max(current, 1) * _SCALES[token]
            current = 0.0
        elif token == "and" and in_words and tokens[i - 1] in _SCALES:
            continue  # "one hundred and five"
        else:
            flush()
    flush()
    return found


def was_said(value: float, numbers: set[float]) -> bool:
    return any(math.isclose(abs(value), abs(n), rel_tol=1e-9, abs_tol=1e-9) for n in numbers)


def _spoken_amount(words: list[str]) -> float | None:
    """The number that the words at the end of `words` say ("ten", "eight hundred", "twenty
    five thousand"), taking them off `words`; None (and nothing taken) when none do."""
    tail: list[str] = []
    while words and (w := words[-1].lower().strip(".,")) in (*_SMALL, *_TENS, *_SCALES, "and"):
        tail.insert(0, w)
        words.pop()
    if tail and tail[0] in _SCALES and words and words[-1].lower() == "a":
        words.pop()  # "a hundred"
        tail.insert(0, "one")
    while tail and tail[0] in ("and", "hundred", "thousand", "million", "billion", "k"):
        words.append(tail.pop(0))  # a number starts with its digits' words
    total = current = 0.0
    for w in tail:
        if w in _SMALL or w in _TENS:
            if current % 100 and (w in _TENS or current % 10 or 10 <= current % 100 < 20):
                words.extend(tail)  # "five three": two numbers, not one amount
                return None
            current += _SMALL.get(w, 0) + _TENS.get(w, 0)
        elif w == "hundred":
            current = max(current, 1) * 100
        elif w in _SCALES:
            total += max(current, 1) * _SCALES[w]
            current = 0.0
    return total + current if tail else None


def _label_and_amount(chunk: str) -> tuple[str, float] | None:
    """("rent", 900.0) of "rent 900", "rent is $900", "rent = 900", "rent nine hundred" or
    "rent 90 percent"; ("", -5.0) of a bare "minus 5"; None when `chunk` does not end in a
    number."""
    words = chunk.replace("=", " = ").split()
    if words and words[-1].lower() in ("%", "percent"):
        words.pop()
    elif words and words[-1].endswith("%"):
        words[-1] = words[-1][:-1]
    amount = _AMOUNT.fullmatch(words[-1]) if words else None
    if amount is not None:
        words.pop()
        negative, value = bool(amount["sign"]), float(amount["number"].replace(",", ""))
    elif (spoken := _spoken_amount(words)) is not None:
        negative, value = False, spoken
    else:
        return None
    if words and words[-1].lower() == "minus" and not negative:
        words.pop()
        negative = True
    if len(words) > 1 and words[-1].lower() in _SEPARATORS:
        words.pop()
    label = " ".join(words).strip(" ,")
    if label and not any(c.isalpha() for c in label):
        return None  # "12 7": a label names something
    return label, -value if negative else value


_MAX_LABEL_WORDS = 3


def _rejoined(
    chunks: list[str], parsed: list[tuple[str, float] | None]
) -> tuple[list[str], list[tuple[str, float] | None]]:
    """A pause between a label and its number is transcribed as a comma or a full stop
    ("Tuesday, fifty five.", "Week one, five."): a short chunk of words followed by a bare
    number is one pair, the chunk its label."""
    out_chunks: list[str] = []
    out_parsed: list[tuple[str, float] | None] = []
    i = 0
    while i < len(chunks):
        words = chunks[i].split()
        following = parsed[i + 1] if i + 1 < len(chunks) else None
        if (
            following is not None
            and not following[0]  # the next chunk is a bare number
            and 0 < len(words) <= _MAX_LABEL_WORDS
            and words[0][:1].isalpha()
        ):
            out_chunks.append(f"{chunks[i]} {chunks[i + 1]}")
            out_parsed.append((" ".join(words).strip(" ,"), following[1]))
            i += 2
        else:
            out_chunks.append(chunks[i])
            out_parsed.append(parsed[i])
            i += 1
    return out_chunks, out_parsed


def said_pairs(text: str) -> tuple[str, list[str], list[float]] | None:
    """(title, labels, values) when `text` dictates two or more "label number" pairs, as in
    "a pie chart of my expenses: rent 900, food 300 and travel 150"; otherwise None.

    A colon usually ends the request ("... my expenses: rent 900"), but a transcript also
    writes one between a label and its number ("Week 1: 5, Week 2: 8"): each reading is tried
    and the one that finds the most pairs wins."""
    if len(text) > MAX_DICTATION_CHARS:
        return None
    # "Bob-75", "food-free hundred": a transcript's dash for a pause.
    text = heard_as_numbers(_LABEL_DASH_NUMBER.sub(" ", text))
    last_head, colon, last_data = text.rpartition(":")
    first_head, _, first_data = text.partition(":")
    readings = [
        _pairs(last_head, colon, last_data),
        _pairs(first_head, colon, first_data.replace(":", " : ")) if colon else None,
        _pairs("", "", text.replace(":", " : ")) if colon else None,
    ]
    return max((r for r in readings if r), key=lambda r: len(r[2]), default=None)


def _pairs(head: str, colon: str, data: str) -> tuple[str, list[str], list[float]] | None:
    """`said_pairs` of a request read as `head`, then `colon` (or none), then the data."""
    if not colon:
        head, data = "", f"{head} {data}".strip()
    chunks = [c for c in _CHUNK_BREAK.split(data.strip().rstrip(".!?")) if c.strip()]
    parsed = [_label_and_amount(c) for c in chunks]
    if not colon and len(chunks) > 2 and parsed[0] is None and parsed[1] and not parsed[1][0]:
        # "Draw a line chart of visitors Monday, forty, Tuesday, fifty five": the request's
        # last word is the first label.
        head, _, label = chunks[0].rstrip().rpartition(" ")
        if head:
            chunks, parsed = [head, label, *chunks[1:]], [None, None, *parsed[1:]]
    chunks, parsed = _rejoined(chunks, parsed)
    if not colon and len(parsed) > 2 and parsed[0] is None and all(parsed[1:]):
        # "Show me a bar chart of monthly sales, January ten. February 20.": a transcript
        # of a request dictated with pauses has no colon; its first piece is the request.
        # But words after a colon in it ("Chart these scores : Alice Nainty") are the list's
        # first item, heard without its number: the list cannot be read whole.
        if " : " in chunks[0] and chunks[0].rpartition(" : ")[2].strip():
            return None
        head, chunks, parsed, colon = chunks[0], chunks[1:], parsed[1:], ":"
    if len(chunks) < 2:
        return None
    title_match = _TITLE.search(" ".join(head.split()))
    title = title_match["title"].strip() if title_match else ""
    pairs = [p for p in parsed if p is not None]
    if len(pairs) < len(parsed):
        return None
    labels = [label for label, _ in pairs]
    values = [value for _, value in pairs]
    if not any(labels):  # "graph these numbers: 4, 8, 15"
        return (title, [str(i + 1) for i in range(len(values))], values) if colon else None
    if not all(labels):
        return None
    if not colon and any(len(label.split()) > 3 for label in labels):
        return None  # without a colon, a long first "label" is the request itself
    return title, labels, values
