"""The current date and time in any IANA timezone, read from this machine's clock."""

import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from pipecat.adapters.llm.schemas.direct_function import tool_options
from pipecat.services.llm_service import FunctionCallParams

from bot.conversation import Messages, current_request
from bot.routing_hints import argument_choices, only_choice, requested_when, routing_constraint, routing_examples

TIMEZONES = frozenset(available_timezones())

# A question about the clock or the calendar names one of these; "How many minutes are in a
# day?" does too and is left to the model, "What's the capital of Japan?" never reaches it.
ASKS_FOR_TIME = (
    r"\b(time|timezone|date|day|today|tonight|tomorrow|yesterday|clock|o'clock|hours?+|minutes?+"
    r"|morning|afternoon|evening|night|midnight|noon|awake|asleep|late|early|year|month|week"
    r"|weekday|monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b"
)


# The areas of the timezone database's canonical names ("Asia/Tokyo"); legacy names such as
# "Turkey" or "Factory" are words too often said for other reasons.
_AREAS = ("Africa", "America", "Antarctica", "Asia", "Atlantic", "Australia", "Europe", "Indian", "Pacific")


def _places() -> dict[str, str]:
    """Each city of a canonical timezone name, as said ("new york"), with its timezone; a city
    named in two areas is left out (the model tells them apart)."""
    places: dict[str, set[str]] = {}
    for key in TIMEZONES:
        if key.split("/", 1)[0] in _AREAS:
            places.setdefault(key.rsplit("/", 1)[-1].replace("_", " ").lower(), set()).add(key)
    return {place: min(keys) for place, keys in places.items() if len({k.split("/")[0] for k in keys}) == 1}


PLACES = _places()
_LONGEST_PLACE_WORDS = max(len(place.split()) for place in PLACES)
# The words after "in", "for" or "at" (read ahead, so that "in London and in Paris" finds both).
_PLACE_FOLLOWS = re.compile(
    r"\b(?:in|for|at)\s++(?:the\s++)?+(?=([a-z][a-z'-]*+(?:\s[a-z][a-z'-]*+){0,2}+))", re.IGNORECASE
)


def named_timezone(request: str) -> str | None:
    """The timezone of the one city the request asks about ("... in Tokyo?"), or None."""
    found = set()
    for match in _PLACE_FOLLOWS.finditer(request):
        words = match[1].lower().split()
        for n in range(min(len(words), _LONGEST_PLACE_WORDS), 0, -1):
            if (zone := PLACES.get(" ".join(words[:n]))) is not None:
                found.add(zone)
                break
    return found.pop() if len(found) == 1 else None


def timezone_constraint(messages: Messages, parameters: dict[str, Any]) -> dict[str, Any]:
    """A request that names a city of the timezone database calls with its timezone, with
    nothing left to decode."""
    zone = named_timezone(current_request(messages))
    return only_choice(parameters, timezone=zone) if zone else parameters


@tool_options(timeout_secs=2.0)
@routing_constraint(requested_when(ASKS_FOR_TIME))
@routing_constraint(timezone_constraint)
# Spelled as this machine's timezone database does ("Asia/Hong_Kong", not "Asia/Hong Kong"):
# a small model knows the city but not always the exact key.
@argument_choices(timezone=tuple(sorted(TIMEZONES)))
@routing_examples(
    ("What time is it in London?", {"timezone": "Europe/London"}),
    ("What's the date today in New York?", {"timezone": "America/New_York"}),
)
async def get_current_time(params: FunctionCallParams, timezone: str):
    """Get the current date and time in a timezone.

    Args:
        timezone: IANA timezone name, e.g. Europe/Paris, Asia/Tokyo or UTC.
    """
    name = (timezone or "").strip()
    # Only names of the timezone database: any other string reaches the file system (a
    # directory such as "America" raises an error naming the server's own path).
    if name not in TIMEZONES:
        await params.result_callback(
            {"error": f"unknown timezone {name[:60]!r}; use an IANA name such as Europe/Paris"}
        )
        return
    zone = ZoneInfo(name)
    now = datetime.now(zone)
    spoken_time, day = now.strftime("%-I:%M %p"), now.strftime("%A, %B %-d")
    await params.result_callback(
        {
            "timezone": zone.key,
            "time": now.strftime("%H:%M"),
            "spoken_time": spoken_time,
            "date": now.strftime("%A, %B %-d, %Y"),
            # The time comes first, and a comma after the place lets speech start there.
            "summary": f"It is {spoken_time} {_where(zone.key)}, on {day}.",
        }
    )


def _where(key: str) -> str:
    """ "in Tokyo" for Asia/Tokyo, "in New York" for America/New_York, "in UTC" for UTC."""
    place = key if key.startswith("Etc/") else key.rsplit("/", 1)[-1].replace("_", " ")
    return f"in {place}"
