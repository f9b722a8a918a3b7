"""Tool calling for small local models, through constrained decoding.

Small models do not emit OpenAI `tool_calls`, but they follow a grammar reliably. Every reply
is one JSON object: `{"tool": "<name>", "arguments": {...}}` for a tool call, or
`{"tool": "none", "answer": "..."}` for a spoken answer. The grammar (llguidance, compiled by
llama.cpp) makes any other shape impossible, and the answer text is streamed out of the JSON
string as it is generated, so a plain answer costs only the few tokens of its JSON prefix.

Tools keep their few-shot phrasings next to their code (`@routing_examples`, in
`bot/routing_hints.py`), and this module turns a context's tools into the grammar and the
instructions the model sees.
"""

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from pipecat.frames.frames import FunctionCallFromLLM

from bot.routing_hints import RoutableTool, routable_tools

NO_TOOL = "none"


def answer_json(text: str) -> str:
    return json.dumps({"tool": NO_TOOL, "answer": text})


def call_json(name: str, arguments: dict[str, Any], *more: tuple[str, dict[str, Any]]) -> str:
    """A tool-call reply; further (name, arguments) pairs chain on as "then"."""
    return json.dumps(_chain([(name, arguments), *more]))


def _chain(calls: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    name, arguments = calls[0]
    reply: dict[str, Any] = {"tool": name, "arguments": arguments}
    if len(calls) > 1:
        reply["then"] = _chain(calls[1:])
    return reply


# Every reply starts with these characters, so they are written into the assistant's turn
# (llama.cpp continues a trailing assistant message) instead of being decoded token by token:
# the model's first generated token already chooses between answering and a tool.
REPLY_PREFILL = '{"tool": "'


# Once the model has chosen to answer, the grammar allows only this until the answer's text:
# a reply continued from here (`answer_grammar`) computes these characters as prompt, in one
# batch, instead of decoding them one token at a time.
ANSWER_PREFILL = f'{REPLY_PREFILL}{NO_TOOL}", "answer": "'
# The body of a JSON string: no raw quotes, backslashes or control characters.
_ANSWER_TEXT_RULE = 'ANSWER_TEXT: /([^"\\\\\\x00-\\x1f]|\\\\.)*/'


def reply_grammar(tools: list[RoutableTool], allow_tools: bool = True) -> str:
    """llguidance grammar for the rest of a reply after `REPLY_PREFILL`."""
    branches = ["answer"]
    rules = [
        f'answer: "{NO_TOOL}\\", \\"answer\\": \\"" ANSWER_TEXT "\\"}}"',
        _ANSWER_TEXT_RULE,
    ]
    if allow_tools and tools:
        branches += [f"call_{i}" for i in range(len(tools))]
        rules += _call_rules(tools)
    return "\n".join(["%llguidance {}", "start: " + " | ".join(branches), *rules])


def call_opening(tool: RoutableTool) -> str:
    """What a call of `tool` says after `REPLY_PREFILL`, up to its arguments object. It stops
    before the space that follows: a prompt ending in a lone space is tokenized as the model
    never writes it (the space belongs to the token of the object's opening), and the model,
    thrown off, no longer chained a second call."""
    return f'{tool.name}", "arguments":'


def call_grammar(tools: list[RoutableTool], started: str) -> str:
    """llguidance grammar for the rest of a tool call whose first characters after
    `REPLY_PREFILL` are `started`: the rest of each call opening that begins with them."""
    branches, rules = [], _call_rules(tools)
    for i, tool in enumerate(tools):
        opening = call_opening(tool) + " "
        if opening.startswith(started):
            rest = json.dumps(opening[len(started) :])
            branches.append(f'{rest} arguments_{i} {_then(tool)}"}}"')
    return "\n".join(["%llguidance {}", "start: " + " | ".join(branches), *rules])


def _then(tool: RoutableTool) -> str:
    return "" if tool.alone else "then? "


def _call_rules(tools: list[RoutableTool]) -> list[str]:
    rules = []
    calls = [f"call_{i}" for i in range(len(tools))]
    for i, tool in enumerate(tools):
        rules += [
            f'call_{i}: "{tool.name}\\", \\"arguments\\": " arguments_{i} {_then(tool)}"}}"',
            f"arguments_{i}: %json {json.dumps(tool.parameters)}",
        ]
    # Several tools in one reply: each call may name the next one, and they run in parallel.
    rules.append('then: ", \\"then\\": {\\"tool\\": \\"" (' + " | ".join(calls) + ")")
    return rules


def answer_grammar() -> str:
    """llguidance grammar for the rest of an answer after `ANSWER_PREFILL`."""
    return "\n".join(["%llguidance {}", 'start: ANSWER_TEXT "\\"}"', _ANSWER_TEXT_RULE])


def reply_instructions(tools: list[RoutableTool]) -> str:
    lines = [
        "Always reply with one JSON object.",
        f'To answer the user, reply {{"tool": "{NO_TOOL}", "answer": "<your short spoken answer>"}}.',
    ]
    if tools:
        lines.append("When, and only when, the user needs one of these tools, call it instead:")
        for tool in tools:
            args = ", ".join(
                f'"{name}": <{spec.get("description") or spec.get("type", "value")}>'
                for name, spec in tool.parameters["properties"].items()
            )
            lines.append(f'- {{"tool": "{tool.name}", "arguments": {{{args}}}}}: {tool.description}')
        lines.append('When the user needs two tools at once, chain the second call as "then": {...}.')
        lines.append("After a tool result arrives, answer the user from it in one short sentence.")
    lines += ["", "Examples:"]
    # As many plain answers as tool calls are shown, interleaved with them: with few of them,
    # or all at one end, a small model learns that every question is a tool call. Several
    # mention charts, time or feelings without needing a tool, so a word alone does not route.
    plain = [
        ("What is the capital of Italy?", answer_json("The capital of Italy is Rome.")),
        ("What is a line chart good for?", answer_json("It shows how something changes over time.")),
        ("Hello there!", answer_json("Hello! How can I help you today?")),
        ("When is the best season to visit Canada?", answer_json("Summer and early autumn are lovely there.")),
        ("Who painted the Mona Lisa?", answer_json("Leonardo da Vinci painted the Mona Lisa.")),
        ("I'm so excited, I got the job!", answer_json("Congratulations, that is wonderful news!")),
        ("Why do we have time zones?", answer_json("Because the sun rises at different times around the world.")),
        ("What does a server do?", answer_json("It runs programs that other computers connect to.")),
        ("Do you like music?", answer_json("I can't listen to it, but I love talking about music.")),
    ]
    calls = [(said, call_json(tool.name, args)) for tool in tools for said, args in tool.examples]
    if pair := _two_call_example(tools):
        calls.append(pair)
    shots: list[tuple[str, str]] = []
    for i in range(max(len(plain), len(calls))):
        shots += plain[i : i + 1] + calls[i : i + 1]
    for said, reply in shots:
        lines += [f"User: {said}", f"Assistant: {reply}"]
    return "\n".join(lines)


def _two_call_example(tools: list[RoutableTool]) -> tuple[str, str] | None:
    """One utterance asking for two tools (two different ones when there are), joined."""
    examples = [(tool.name, said, args) for tool in tools for said, args in tool.examples[:1]]
    if len(examples) < 2 and tools and len(tools[0].examples) >= 2:
        examples = [(tools[0].name, said, args) for said, args in tools[0].examples[:2]]
    if len(examples) < 2:
        return None
    (name_a, said_a, args_a), (name_b, said_b, args_b) = examples[:2]
    said = f"{said_a.rstrip('?.!')}, and {said_b[0].lower()}{said_b[1:]}"
    return said, call_json(name_a, args_a, (name_b, args_b))


_ANSWER_PREFIX = re.compile(r'^\s*+\{\s*+"tool"\s*+:\s*+"none"\s*+,\s*+"answer"\s*+:\s*+"')
_TOOL_NAME = re.compile(r'^\s*+\{\s*+"tool"\s*+:\s*+"(?P<name>[^"]*+)"')
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class ReplyDecoder:
    """Turns a streamed JSON reply into answer text as it arrives, or into one tool call."""

    def __init__(self, prefill: str = "") -> None:
        self._raw = prefill  # what the reply was started with, before any generated text
        self._mode: str | None = None  # None until known, then "answer" or "tool"
        self._cursor = 0  # next unread character of the answer string in _raw
        self._answer_done = False

    @property
    def is_answer(self) -> bool:
        return self._mode == "answer"

    @property
    def is_tool_call(self) -> bool:
        return self._mode == "tool"

    @property
    def answer_complete(self) -> bool:
        """The answer string has closed: nothing after it is ever spoken."""
        return self._answer_done

    def feed(self, text: str) -> str:
        """Add generated text; return the newly decoded answer text (empty for tool calls)."""
        self._raw += text
        if self._mode is None:
            if match := _ANSWER_PREFIX.match(self._raw):
                self._mode, self._cursor = "answer", match.end()
            elif (match := _TOOL_NAME.match(self._raw)) and match["name"] != NO_TOOL:
                self._mode = "tool"
        return self._decode_answer() if self._mode == "answer" else ""

    def _decode_answer(self) -> str:
        out = []
        raw, i = self._raw, self._cursor
        while i < len(raw) and not self._answer_done:
            ch = raw[i]
            if ch == '"':
                self._answer_done = True
                i += 1
            elif ch == "\\":
                if i + 1 >= len(raw):
                    break  # wait for the escaped character
                code = raw[i + 1]
                if code == "u":
                    if i + 6 > len(raw):
                        break
                    unit = int(raw[i + 2 : i + 6], 16)
                    if 0xD800 <= unit < 0xDC00:  # high surrogate: an emoji's first half
                        if i + 12 > len(raw):
                            break  # wait for its second half
                        low = int(raw[i + 8 : i + 12], 16)
                        out.append(chr(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)))
                        i += 12
                    else:
                        out.append(chr(unit))
                        i += 6
                else:
                    out.append(_ESCAPES.get(code, code))
                    i += 2
            else:
                out.append(ch)
                i += 1
        self._cursor = i
        return "".join(out)

    def tool_call(self) -> tuple[str, dict[str, Any]]:
        """The finished (first) tool call; raises ValueError when the reply is not a whole call."""
        return self.tool_calls()[0]

    def tool_calls(self) -> list[tuple[str, dict[str, Any]]]:
        """Every call of the finished reply, following its "then" chain."""
        try:
            reply = json.loads(self._raw)
        except json.JSONDecodeError as e:
            raise ValueError(f"not a tool call: {self._raw!r}") from e
        calls = []
        while isinstance(reply, dict) and "tool" in reply:
            if not isinstance(reply.get("arguments"), dict):
                raise ValueError(f"not a tool call: {self._raw!r}")
            calls.append((reply["tool"], reply["arguments"]))
            reply = reply.get("then")
        if not calls:
            raise ValueError(f"not a tool call: {self._raw!r}")
        return calls


def to_routed_messages(messages: list[dict[str, Any]], system_prompt: str) -> list[dict[str, Any]]:
    """Rewrite an OpenAI-format conversation into the JSON-reply format the model was shown.

    Earlier answers and tool calls become the JSON objects the model itself would have
    written, and tool results become user-side notes, so the history always matches the
    format of the next reply.
    """
    routed = [{"role": "system", "content": system_prompt}]
    for message in messages:
        role, content = message.get("role"), message.get("content")
        if isinstance(content, list):  # multi-part content: keep the text parts
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        if role in ("system", "developer"):
            routed[0]["content"] += "\n\n" + (content or "")
        elif role == "user":
            routed.append({"role": "user", "content": content or ""})
        elif role == "assistant":
            calls = []
            for call in message.get("tool_calls") or []:
                function = call.get("function", {})
                try:
                    arguments = json.loads(function.get("arguments") or "{}")
                except json.JSONDecodeError:
                    arguments = {}
                calls.append((function.get("name", ""), arguments))
            if calls:
                routed.append({"role": "assistant", "content": call_json(*calls[0], *calls[1:])})
            if content:
                routed.append({"role": "assistant", "content": answer_json(content)})
        elif role == "tool":
            routed.append({"role": "user", "content": f"(tool result) {content}"})
    return routed


# Tool rounds per user turn; after them the model must answer from the results (a small
# model otherwise calls the same tool again and again).
MAX_TOOL_ROUNDS = 1


@dataclass(frozen=True)
class RoutedConversation:
    messages: list[dict[str, Any]]  # system prompt with the reply instructions, then history
    tools: list[RoutableTool]  # as the reply may call them now (the grammar's, not the prompt's)
    allow_tools: bool


def route_conversation(
    context: Any, system_prompt: str | None, budget_chars: float, window: "HistoryWindow | None" = None
) -> RoutedConversation:
    """A Pipecat `LLMContext` as the routed conversation a small model answers, trimmed to fit
    `budget_chars` (by the session's `window`, so that its requests agree on where the
    conversation starts); tools are allowed until this user turn has had its tool round."""
    tools = routable_tools(context.tools)
    messages = context.get_messages()
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=0)
    tool_rounds = sum(1 for m in messages[last_user:] if m.get("role") == "assistant" and m.get("tool_calls"))
    system = "\n\n".join(p for p in (system_prompt, reply_instructions(tools)) if p)
    kept = (window or HistoryWindow()).trim(messages, budget_chars - len(system))
    return RoutedConversation(
        messages=to_routed_messages(kept, system),
        tools=[t for tool in tools if (t := tool.constrained(kept)) is not None],
        allow_tools=tool_rounds < MAX_TOOL_ROUNDS,
    )


# A conversation over its budget loses its oldest turns down to this share of it, so the requests
# of the next several turns start where it does.
TRIM_TO = 0.75
# How many of the oldest kept messages mark where a session's conversation starts.
_START_MARK = 3


class HistoryWindow:
    """Where one session's requests start their conversation, once it has outgrown its budget.

    A cached prompt is reused only as far as it matches: llama.cpp can shift cached turns to
    where a dropped one was, but not make room for a turn it no longer holds. The prompt of a
    speculative prefill is longer than the request that follows it (it adds the answer being
    spoken), so it dropped one old message more; the request then sent that message back, in
    front of everything cached, and the whole conversation was computed again. So the start
    only moves forward: a message one request dropped, no later one sends. And a trim goes down
    to `TRIM_TO` of the budget, at a user message, so it comes once in several turns. The
    current user turn (the last user message and what follows it) is never dropped.
    """

    def __init__(self) -> None:
        self._start: list[str] = []  # the oldest kept messages, as JSON

    def trim(self, messages: list[dict], budget_chars: float) -> list[dict]:
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=0)
        instructions = [m for m in messages[:last_user] if m.get("role") in ("system", "developer")]
        history = [m for m in messages[:last_user] if m.get("role") not in ("system", "developer")]
        current = messages[last_user:]
        encoded = [_json(m) for m in history]
        start = self._resumed_at(encoded)
        history, encoded = history[start:], encoded[start:]
        size = sum(len(e) for e in encoded) + sum(len(_json(m)) for m in instructions + current)
        if size > budget_chars:
            while history and (size > budget_chars * TRIM_TO or history[0].get("role") != "user"):
                history.pop(0)
                size -= len(encoded.pop(0))
        self._start = encoded[:_START_MARK]
        return instructions + history + current

    def _resumed_at(self, encoded: list[str]) -> int:
        """Where the start marked by the last trim is in the history (0 when it is gone)."""
        marks = len(self._start)
        if not marks:
            return 0
        for i in range(len(encoded) - marks + 1):
            if encoded[i : i + marks] == self._start:
                return i
        return 0


def _json(message: dict) -> str:
    return json.dumps(message, default=str, sort_keys=True)


def reply_json_schema(tools: list[RoutableTool], allow_tools: bool = True) -> dict[str, Any]:
    """The routing as a JSON schema, for OpenAI-compatible servers that take a
    `response_format` (vLLM, llama.cpp's server, Ollama) rather than a grammar."""
    branches: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"tool": {"const": NO_TOOL}, "answer": {"type": "string"}},
            "required": ["tool", "answer"],
            "additionalProperties": False,
        }
    ]
    if allow_tools:
        branches += [
            {
                "type": "object",
                "properties": {"tool": {"const": t.name}, "arguments": t.parameters},
                "required": ["tool", "arguments"],
                "additionalProperties": False,
            }
            for t in tools
        ]
    return {"anyOf": branches}


def function_calls(context: Any, calls: list[tuple[str, dict[str, Any]]]) -> list[FunctionCallFromLLM]:
    """Pipecat's function calls for the (name, arguments) of a routed reply, with fresh ids."""
    return [
        FunctionCallFromLLM(
            context=context,
            tool_call_id=f"call_{uuid.uuid4().hex[:12]}",
            function_name=name,
            arguments=arguments,
        )
        for name, arguments in calls
    ]
