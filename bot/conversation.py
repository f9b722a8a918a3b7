"""The conversation as the router and the tools read it: the user's words, and what the user is
asking now. A request can arrive in parts (a pause mid-sentence ends a turn before the bot
answers); these helpers are the one place that decides which parts belong to it."""

from typing import Any

Messages = list[dict[str, Any]]


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # multi-part content: its text parts
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content.strip() if isinstance(content, str) else ""


def user_texts(messages: Messages) -> list[str]:
    """The text of each user message, oldest first."""
    return [
        text
        for message in messages
        if isinstance(message, dict) and message.get("role") == "user" and (text := _text(message))
    ]


def current_request(messages: Messages) -> str:
    """What the user is asking now: their messages since the assistant last said or did
    something. A pause mid-sentence ("Is this positive or negative: ... I love my job") can
    end a turn before the bot answers; the words after it belong to the same request. The
    tool calls made for this request (seen while its tools run) do not end it."""
    while messages and _unheard(messages[-1]):
        messages = messages[:-1]
    since = 0
    for i, message in enumerate(messages):
        if isinstance(message, dict) and message.get("role") == "assistant":
            if _text(message) or message.get("tool_calls"):
                since = i + 1
    return " ".join(user_texts(messages[since:]))


def _unheard(message: Any) -> bool:
    """A part of a reply nobody heard: a call or its result, or an assistant turn with no text."""
    role = message.get("role") if isinstance(message, dict) else None
    return role == "tool" or (role == "assistant" and not _text(message))


def _is_user(message: Any) -> bool:
    return isinstance(message, dict) and message.get("role") == "user"


def before_request(messages: Messages) -> Messages:
    """`messages` without the last request: the user messages at the end and the parts of
    unheard replies among them (what a transcript of the whole request stands for)."""
    end = len(messages)
    while end > 0 and (_unheard(messages[end - 1]) or _is_user(messages[end - 1])):
        end -= 1
    return list(messages[:end])


def merged_request(messages: Messages) -> Messages | None:
    """`messages` with the parts of the last request joined into one user message (the user
    messages no heard answer separates, without the unheard reply's calls and results between
    them), or None when it is in one piece. `current_request`'s words, as one message."""
    if not messages or not _is_user(messages[-1]):
        return None
    request = range(len(before_request(messages)), len(messages))
    parts = [i for i in request if _is_user(messages[i])]
    if len(parts) == 1:
        return None
    words = " ".join(t for t in (_text(messages[k]) for k in parts) if t)
    return [*messages[: parts[0]], {"role": "user", "content": words}]
