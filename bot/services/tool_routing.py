"""Tool calling for small local models, through constrained decoding.

Small models do not emit OpenAI `tool_calls`, but they follow a grammar reliably. Every reply
is one JSON object: `{"tool": "<name>", "arguments": {...}}` for a tool call, or
`{"tool": "none", "answer": "..."}` for a spoken answer. The grammar (llguidance, compiled by
llama.cpp) makes any other shape impossible, and the answer text is streamed out of the JSON
string as it is generated, so a plain answer costs only the few tokens of its JSON prefix.

Tools keep their few-shot phrasings next to their code (`@routing_examples`), and this module
turns a context's tools into the grammar and the instructions the model sees.
"""

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import FunctionCallFromLLM

NO_TOOL = "none"


def routing_examples(*examples: tuple[str, dict[str, Any]]) -> Callable:
    """Attach (utterance, arguments) pairs that show a small model when to call this tool."""

    def decorate(fn: Callable) -> Callable:
        fn.routing_examples = list(examples)
        return fn

    return decorate


def argument_choices(**choices: tuple[str, ...]) -> Callable:
    """Declare the allowed values of string arguments. Pipecat's schema from annotations has no
    enums, so they are added here, where the grammar makes any other value impossible."""

    def decorate(fn: Callable) -> Callable:
        fn.argument_choices = {name: list(values) for name, values in choices.items()}
        return fn

    return decorate


Messages = list[dict[str, Any]]
# Given the conversation so far (OpenAI-format messages) and a tool's JSON-schema parameters,
# the parameters a reply may use now, or None when the tool cannot be called yet.
RoutingConstraint = Callable[[Messages, dict[str, Any]], dict[str, Any] | None]


def routing_constraint(constraint: RoutingConstraint) -> Callable:
    """Narrow what the grammar allows for a tool from the conversation (e.g. only numbers the
    user said). The prompt still shows the whole schema: it is the cached prefix. Stacked
    constraints all apply."""

    def decorate(fn: Callable) -> Callable:
        fn.routing_constraints = (constraint, *getattr(fn, "routing_constraints", ()))
        return fn

    return decorate


def requested_when(pattern: str) -> RoutingConstraint:
    """A constraint offering the tool only when the current request, or the user's message
    before it, matches `pattern` (a case-insensitive regular expression): a small model
    otherwise reaches for a tool that a word-level cue rules out, e.g. sentiment analysis for
    a user simply sharing a feeling. The message before counts because a follow-up leans on
    it ("What time is it in Tokyo?" ... "And in Paris?")."""
    cue = re.compile(pattern, re.IGNORECASE)

    def constraint(messages: Messages, parameters: dict[str, Any]) -> dict[str, Any] | None:
        said = " ".join([*user_texts(messages)[-2:], current_request(messages)])
        return parameters if cue.search(said) else None

    return constraint


_CALLED_ALONE = "x-called-alone"


def called_alone(parameters: dict[str, Any]) -> dict[str, Any]:
    """What a constraint returns for a call that chains no other call: one whose arguments it
    narrowed so far that a small model, kept from writing what it meant to, would otherwise
    go on into a chained call of its own making."""
    return {**parameters, _CALLED_ALONE: True}


@dataclass(frozen=True)
class RoutableTool:
    name: str
    description: str
    parameters: dict[str, Any]
    examples: list[tuple[str, dict[str, Any]]]
    constraints: tuple[RoutingConstraint, ...] = ()
    alone: bool = False  # its call chains no other (`called_alone`)

    def constrained(self, messages: Messages) -> "RoutableTool | None":
        """This tool as it may be called in reply to `messages`; None when it cannot be."""
        parameters: dict[str, Any] | None = self.parameters
        for constraint in self.constraints:
            parameters = constraint(messages, parameters)
            if parameters is None:
                return None
        if parameters is self.parameters:
            return self
        alone = bool(parameters.get(_CALLED_ALONE))
        parameters = {k: v for k, v in parameters.items() if k != _CALLED_ALONE}
        return replace(self, parameters=parameters, alone=alone)


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


def routable_tools(tools: ToolsSchema | Any) -> list[RoutableTool]:
    if not isinstance(tools, ToolsSchema):
        return []
    functions = {wrapper.name: wrapper.function for wrapper in tools.direct_functions}
    routable = []
    for schema in tools.standard_tools:
        function = functions.get(schema.name)
        choices = getattr(function, "argument_choices", {})
        properties = {
            name: {**spec, "enum": choices[name]} if name in choices else spec
            for name, spec in schema.properties.items()
        }
        routable.append(
            RoutableTool(
                name=schema.name,
                description=schema.description,
                parameters={
                    "type": "object",
                    "properties": properties,
                    "required": schema.required,
                    "additionalProperties": False,
                },
                examples=getattr(function, "routing_examples", []),
                constraints=getattr(function, "routing_constraints", ()),
            )
        )
    return routable


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


def route_conversation(context: Any, system_prompt: str | None, budget_chars: float) -> RoutedConversation:
    """A Pipecat `LLMContext` as the routed conversation a small model answers, trimmed to fit
    `budget_chars`; tools are allowed until this user turn has had its tool round."""
    tools = routable_tools(context.tools)
    messages = context.get_messages()
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=0)
    tool_rounds = sum(1 for m in messages[last_user:] if m.get("role") == "assistant" and m.get("tool_calls"))
    system = "\n\n".join(p for p in (system_prompt, reply_instructions(tools)) if p)
    kept = _trim(messages, budget_chars - len(system))
    return RoutedConversation(
        messages=to_routed_messages(kept, system),
        tools=[t for tool in tools if (t := tool.constrained(kept)) is not None],
        allow_tools=tool_rounds < MAX_TOOL_ROUNDS,
    )


def _trim(messages: list[dict], budget_chars: float) -> list[dict]:
    """Drop the oldest messages to fit the window, never the current turn (the last user
    message and what follows it: tool calls and their results)."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=0)
    instructions = [m for m in messages[:last_user] if m.get("role") in ("system", "developer")]
    history = [m for m in messages[:last_user] if m.get("role") not in ("system", "developer")]
    current = messages[last_user:]
    size = sum(len(json.dumps(m, default=str)) for m in instructions + history + current)
    while history and size > budget_chars:
        size -= len(json.dumps(history.pop(0), default=str))
    return instructions + history + current


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
