"""The rules every client message meets, whichever transport carried it.

A transport that receives JSON bytes (the WebSocket's message frames, the WebRTC data channel)
reads them with `decode_client_json`: bounded in size, nesting and number length, so no
message can raise out of a receive loop (a RecursionError on deep nesting, a ValueError on a
5,000-digit number) or cost more than linear time. Every parsed message, from any transport,
then meets `message_problem` (bot/processors/client_message_check.py applies it for all of
them). Each refusal is a sentence naming the problem, sent back as an RTVI error.
"""

import json
from typing import Any

from pipecat.frames.frames import OutputTransportMessageUrgentFrame

AUDIO_CHANNELS = 1
SAMPLE_BYTES = 2  # 16-bit PCM
MAX_MESSAGE_BYTES = 16 * 1024  # a typed message of the longest allowed text, with room to spare
MAX_JSON_DEPTH = 16  # RTVI's deepest message (send-text with options) is 3 levels
MAX_NUMBER_CHARS = 40  # far above any real number; Python refuses ints past 4,300 digits
EXCERPT_CHARS = 120  # of a refused message, in the log
NOT_AN_ENVELOPE = "message is not an RTVI envelope ({'label': 'rtvi-ai', 'type': '...'})"


def rtvi_error_message(description: str, *, fatal: bool = False) -> dict:
    return {"label": "rtvi-ai", "type": "error", "data": {"error": description, "fatal": fatal}}


def rtvi_server_message(data: dict[str, Any]) -> dict[str, Any]:
    """An RTVI `server-message` envelope; the page dispatches it by `data["type"]`."""
    return {"label": "rtvi-ai", "type": "server-message", "data": data}


def rtvi_error(description: str, *, fatal: bool = False) -> OutputTransportMessageUrgentFrame:
    """The RTVI error as a frame the output transport sends at once."""
    return OutputTransportMessageUrgentFrame(message=rtvi_error_message(description, fatal=fatal))


class _Refused(ValueError):
    pass


def excerpt(data: str | bytes, limit: int = EXCERPT_CHARS) -> str:
    """The start of a message, for a log line of bounded length."""
    text = data[: limit * 4].decode("utf-8", "replace") if isinstance(data, bytes) else data
    more = len(data) - limit
    return repr(text[:limit]) + (f" (+{more} more)" if more > 0 else "")


def _number(text: str) -> float | int:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number of {len(text)} characters is longer than {MAX_NUMBER_CHARS}")
    return float(text) if any(c in text for c in ".eE") else int(text)


def _not_json(name: str) -> None:
    raise _Refused(f"{name} is not a JSON value")


def nesting_depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break  # already too deep: no need to walk the rest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def decode_client_json(data: str | bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Any:
    """The JSON value in `data`; raises ValueError with a sentence naming what is wrong."""
    if len(data) > max_bytes:
        raise ValueError(f"message of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    try:
        value = json.loads(data, parse_int=_number, parse_float=_number, parse_constant=_not_json)
    except _Refused as e:
        raise ValueError(f"message refused: {e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"message is not valid JSON: {e.msg}") from None
    except UnicodeDecodeError:
        raise ValueError("message is not valid UTF-8") from None
    except RecursionError:
        raise ValueError(f"message nests deeper than {MAX_JSON_DEPTH} levels") from None
    if nesting_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"message nests deeper than {MAX_JSON_DEPTH} levels")
    return value


def audio_problem(sample_rate: Any, channels: Any, length: int, expected_rate: int) -> str | None:
    """What is wrong with a chunk of microphone audio, or None."""
    if channels != AUDIO_CHANNELS:
        return f"audio must be mono (1 channel), got {channels} channels"
    if sample_rate != expected_rate:
        return f"unsupported audio sample rate {sample_rate}: send {expected_rate} Hz"
    if length % (SAMPLE_BYTES * AUDIO_CHANNELS):
        return f"audio of {length} bytes is not whole 16-bit samples ({SAMPLE_BYTES * AUDIO_CHANNELS} bytes per frame)"
    return None


# What the product's clients send (the bundled page and Pipecat's official client): the
# handshake, typed text and a goodbye. Anything else RTVI would act on is refused: `send-file`
# would hand the LLM a file or URL, `llm-function-call-result` would let a client answer any
# tool call under any id, and `raw-audio` is a second microphone path past the audio checks.
ALLOWED_MESSAGES = ("client-ready", "send-text", "disconnect-bot")


def message_problem(message: Any, max_text_chars: int) -> str | None:
    """What is wrong with a parsed client message, or None when it may enter the pipeline."""
    if (
        not isinstance(message, dict)
        or message.get("label") != "rtvi-ai"
        or not isinstance(message.get("type"), str)
        or not message["type"]
    ):
        return NOT_AN_ENVELOPE
    kind, data = message["type"], message.get("data")
    if not isinstance(data, (dict, type(None))):
        return f"RTVI {kind[:40]!r} message: data must be an object"
    if nesting_depth(message) > MAX_JSON_DEPTH:
        return f"RTVI {kind[:40]!r} message nests deeper than {MAX_JSON_DEPTH} levels"
    if kind not in ALLOWED_MESSAGES:
        return f"RTVI {kind[:40]!r} messages are not accepted; send one of {', '.join(ALLOWED_MESSAGES)}"
    if kind == "send-text":
        content = (data or {}).get("content")
        if not isinstance(content, str) or not content.strip():
            return "send-text needs content: the text, a non-empty string"
        if len(content) > max_text_chars:
            return (
                f"typed message of {len(content)} characters exceeds the {max_text_chars}-character"
                " limit (AGENT_MAX_TEXT_CHARS)"
            )
    return None
