"""The current date and time in any IANA timezone, read from this machine's clock."""

from datetime import datetime
from zoneinfo import ZoneInfo, available_timezones

from pipecat.adapters.llm.schemas.direct_function import tool_options
from pipecat.services.llm_service import FunctionCallParams

from bot.routing_hints import argument_choices, requested_when, routing_constraint, routing_examples

TIMEZONES = frozenset(available_timezones())

# A question about the clock or the calendar names one of these; "How many minutes are in a
# day?" does too and is left to the model, "What's the capital of Japan?" never reaches it.
ASKS_FOR_TIME = (
    r"\b(time|timezone|date|day|today|tonight|tomorrow|yesterday|clock|o'clock|hours?+|minutes?+"
    r"|morning|afternoon|evening|night|midnight|noon|awake|asleep|late|early|year|month|week"
    r"|weekday|monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b"
)


@tool_options(timeout_secs=2.0)
@routing_constraint(requested_when(ASKS_FOR_TIME))
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
            "summary": f"{_where(zone.key)} it is {spoken_time} on {day}.",
        }
    )


def _where(key: str) -> str:
    """ "In Tokyo" for Asia/Tokyo, "In New York" for America/New_York, "In UTC" for UTC."""
    place = key if key.startswith("Etc/") else key.rsplit("/", 1)[-1].replace("_", " ")
    return f"In {place}"
