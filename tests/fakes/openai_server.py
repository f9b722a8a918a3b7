"""A scripted fake of OpenAI's Chat Completions API, streaming only, on 127.0.0.1.

It speaks the wire format the OpenAI documentation specifies, so the product's real client
(Pipecat's `OpenAILLMService` on the `openai` SDK) can be tested end to end without a network:

- Create chat completion, `POST /v1/chat/completions` (request body, `stream`,
  `stream_options.include_usage`, `tools`, `response_format`):
  https://platform.openai.com/docs/api-reference/chat/create
- The chat completion chunk object (`chat.completion.chunk`, `choices[].delta`, `finish_reason`,
  `usage`): https://platform.openai.com/docs/api-reference/chat-streaming/streaming
- Streaming guide (data-only server-sent events `data: {json}\\n\\n`, ending `data: [DONE]`):
  https://platform.openai.com/docs/guides/streaming-responses?api-mode=chat
  and streamed tool calls (id and name first, then `arguments` fragments, by `index`):
  https://platform.openai.com/docs/guides/function-calling#streaming

(The same pages are also served under https://developers.openai.com/api/docs/, where the
`openai` SDK's docstrings point.)

Failure modes, armed per request with `FakeOpenAI.inject(fault, times=n)`: the next n
completions get `Failure` (an HTTP error status with the documented error body; the `openai`
SDK retries 5xx twice, so a lasting outage is three) or `Stall` (a stream that starts and then
stops sending without closing), whatever the rules say.

A test scripts the replies with `Rule`s: the first rule whose `when(body)` is true answers,
with `Text` (content deltas) or `ToolCall` (a streamed `tool_calls` delta). When the request
asks for a JSON-schema `response_format` whose schema is an `anyOf` of reply branches (the
product's "routed" tool mode, for llama.cpp / vLLM servers), the same reply is instead streamed
as the JSON text such a constrained decoder would produce: `{"tool": "none", "answer": ...}` or
`{"tool": "<name>", "arguments": {...}}`, in small content deltas.

Every request is recorded (`FakeOpenAI.requests`) with its body, headers, the rule that
answered it, the usage it reported, and any contract error, for the test to assert on.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

# Delay between streamed chunks: enough for the client to see a real stream, small enough
# to keep the tests fast.
CHUNK_DELAY_SECS = 0.01

MESSAGE_ROLES = {"system", "developer", "user", "assistant", "tool"}


# --- the script ---------------------------------------------------------------------------


@dataclass
class Text:
    """Reply with assistant text, streamed in word-sized content deltas."""

    text: str


@dataclass
class ToolCall:
    """Reply with one function call; its JSON arguments are streamed in `fragments` pieces."""

    name: str
    arguments: dict[str, Any]
    fragments: int = 4


@dataclass
class Failure:
    """Answer with an HTTP error status and the API's error body (a 5xx: the provider failed)."""

    status: int = 500
    message: str = "The server had an error while processing your request."


@dataclass
class Stall:
    """Start streaming `text`, then stop sending without closing the stream (a hung provider).
    The stream is held open until the client goes away or `hold_secs` pass."""

    text: str = ""
    hold_secs: float = 60.0


Reply = Text | ToolCall
Fault = Failure | Stall


@dataclass
class Rule:
    """`when(body)` -> reply (a `Reply`, or a function of the request body returning one)."""

    name: str
    when: Callable[[dict], bool]
    reply: Reply | Callable[[dict], Reply]


@dataclass
class Recorded:
    """One request the fake received."""

    path: str
    headers: dict[str, str]
    body: Any
    at: float  # time.time() when it arrived
    rule: str | None = None  # which rule answered it
    reply: Reply | None = None
    usage: dict[str, Any] | None = None  # the usage chunk's `usage`, when one was sent
    status: int = 200
    error: str | None = None  # why the fake refused it (a contract violation)


# --- helpers for rules and assertions -------------------------------------------------------


def message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def last_user_text(body: dict) -> str:
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    return message_text(users[-1]) if users else ""


def tool_messages(body: dict) -> list[dict]:
    return [m for m in body.get("messages", []) if m.get("role") == "tool"]


def is_routed(body: dict) -> bool:
    fmt = body.get("response_format") or {}
    return fmt.get("type") == "json_schema"


# --- the wire format -------------------------------------------------------------------------


class ContractError(Exception):
    """The request breaks the documented Chat Completions contract (answered 400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    # Error shape of the API reference ("Error codes" / every endpoint's error response).
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _words(text: str) -> list[str]:
    """Word-sized deltas that concatenate back to `text` exactly."""
    return re.findall(r"\s*\S+", text) or [text]


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _split(text: str, parts: int) -> list[str]:
    size = max(1, -(-len(text) // max(1, parts)))
    return _pieces(text, size)


def _estimate_tokens(value: Any) -> int:
    """A deterministic stand-in for a tokenizer: about four characters a token."""
    return max(1, len(json.dumps(value, ensure_ascii=False)) // 4)


def check_request(body: Any) -> None:
    """The parts of the Create chat completion contract this fake enforces, as OpenAI does
    (https://platform.openai.com/docs/api-reference/chat/create)."""
    if not isinstance(body, dict):
        raise ContractError("request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise ContractError("you must provide a model parameter", "model")
    if body.get("stream") is not True:
        raise ContractError("this fake only serves streamed completions (stream: true)", "stream")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ContractError("messages must be a non-empty array", "messages")
    open_calls: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in MESSAGE_ROLES:
            raise ContractError(f"messages[{i}].role {role!r} is not a valid role", f"messages[{i}].role")
        if role == "assistant":
            for j, call in enumerate(message.get("tool_calls") or []):
                function = call.get("function") or {}
                if not (
                    call.get("id")
                    and call.get("type") == "function"
                    and isinstance(function.get("name"), str)
                    and isinstance(function.get("arguments"), str)
                ):
                    raise ContractError(
                        "assistant tool_calls need id, type 'function', function.name and"
                        " function.arguments (a JSON string)",
                        f"messages[{i}].tool_calls[{j}]",
                    )
                json.loads(function["arguments"])
                open_calls.add(call["id"])
        elif role == "tool":
            if message.get("tool_call_id") not in open_calls:
                raise ContractError(
                    "messages with role 'tool' must be a response to a preceding message with 'tool_calls'",
                    f"messages[{i}].tool_call_id",
                )
            if not isinstance(message.get("content"), (str, list)):
                raise ContractError("tool message content must be a string", f"messages[{i}].content")
    for i, tool in enumerate(body.get("tools") or []):
        function = tool.get("function") or {}
        if tool.get("type") != "function" or not function.get("name"):
            raise ContractError("tools need type 'function' and function.name", f"tools[{i}]")
        parameters = function.get("parameters", {"type": "object"})
        if parameters.get("type") != "object":
            raise ContractError("function parameters must be a JSON schema object", f"tools[{i}]")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ContractError("stream_options must be an object", "stream_options")
    fmt = body.get("response_format")
    if fmt is not None:
        if fmt.get("type") not in ("text", "json_object", "json_schema"):
            raise ContractError("unknown response_format.type", "response_format.type")
        if fmt["type"] == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema")
            if not (fmt.get("json_schema") or {}).get("name"):
                raise ContractError("response_format.json_schema.name is required", "response_format")
            reply_branches(schema)


def reply_branches(schema: Any) -> dict[str, dict]:
    """A routed reply schema -> {tool name: branch}. It must be an `anyOf` of objects, each
    with a `tool` const (`none` for the plain answer, with an `answer` string)."""
    if not isinstance(schema, dict) or not isinstance(schema.get("anyOf"), list) or not schema["anyOf"]:
        raise ContractError("routed reply schema must be an anyOf of branches", "response_format")
    branches = {}
    for i, branch in enumerate(schema["anyOf"]):
        props = branch.get("properties") if isinstance(branch, dict) else None
        const = ((props or {}).get("tool") or {}).get("const")
        if branch.get("type") != "object" or not isinstance(const, str):
            raise ContractError(f"anyOf[{i}] must be an object with a `tool` const", "response_format")
        if "tool" not in branch.get("required", []):
            raise ContractError(f"anyOf[{i}] must require `tool`", "response_format")
        if const == "none":
            if props.get("answer", {}).get("type") != "string" or "answer" not in branch["required"]:
                raise ContractError("the `none` branch needs a required string `answer`", "response_format")
        elif props.get("arguments", {}).get("type") != "object" or "arguments" not in branch["required"]:
            raise ContractError(f"branch {const!r} needs required object `arguments`", "response_format")
        branches[const] = branch
    if "none" not in branches:
        raise ContractError("routed reply schema has no plain-answer (`none`) branch", "response_format")
    return branches


def _fits(arguments: dict, schema: dict) -> bool:
    """The subset of JSON Schema the tools use: required keys, known keys, primitive types."""
    props = schema.get("properties", {})
    if any(key not in arguments for key in schema.get("required", [])):
        return False
    if schema.get("additionalProperties") is False and any(key not in props for key in arguments):
        return False
    types = {"string": str, "number": (int, float), "integer": int, "boolean": bool, "object": dict, "array": list}
    return all(
        isinstance(arguments[key], types.get(spec.get("type"), object))
        for key, spec in props.items()
        if key in arguments
    )


# --- the server ---------------------------------------------------------------------------


class FakeOpenAI:
    """The fake API server, running in its own thread and event loop (so a test that blocks
    its own loop never stalls the product's requests)."""

    def __init__(self, api_key: str = "test-key", rules: list[Rule] | None = None) -> None:
        self.api_key = api_key
        self.rules: list[Rule] = list(rules or [])
        self.requests: list[Recorded] = []
        self._faults: list[Fault] = []  # armed for the next requests, in order
        self.url = ""  # http://127.0.0.1:PORT once started; the API is under {url}/v1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # --- scripting and inspection (called from the test's thread) ---

    def script(self, *rules: Rule) -> None:
        """Replace the rules and forget earlier requests."""
        self.rules = list(rules)
        self.requests.clear()

    def inject(self, fault: Fault, times: int = 1) -> None:
        """Answer the next `times` completion requests with `fault` instead of the rules."""
        self._faults.extend([fault] * times)

    def completions(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == "/v1/chat/completions"]

    def errors(self) -> list[str]:
        return [f"{r.path}: {r.status} {r.error}" for r in self.requests if r.error]

    # --- lifecycle ---

    def start(self, timeout: float = 10) -> str:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise RuntimeError("fake OpenAI server did not start")
        if failure:
            raise failure[0]
        return self.url

    def stop(self, timeout: float = 10) -> None:
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> FakeOpenAI:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    # --- handlers ---

    async def _unknown(self, request: web.Request) -> web.Response:
        record = Recorded(request.path, dict(request.headers), await request.text(), time.time())
        record.status, record.error = 404, f"unknown route {request.method} {request.path}"
        self.requests.append(record)
        return web.json_response(
            _error_body(f"Invalid URL ({request.method} {request.path})", "invalid_request_error"),
            status=404,
        )

    def _refuse(self, record: Recorded, status: int, body: dict) -> web.Response:
        record.status, record.error = status, body["error"]["message"]
        return web.json_response(body, status=status)

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        record = Recorded(request.path, dict(request.headers), None, time.time())
        self.requests.append(record)
        try:
            record.body = json.loads(raw)
        except ValueError:
            record.body = raw.decode(errors="replace")
            return self._refuse(
                record, 400, _error_body("We could not parse the JSON body of your request.", "invalid_request_error")
            )

        # Authentication: https://platform.openai.com/docs/api-reference/authentication
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._refuse(
                record,
                401,
                _error_body("Incorrect API key provided.", "invalid_request_error", code="invalid_api_key"),
            )
        try:
            check_request(record.body)
        except (ContractError, ValueError) as exc:
            return self._refuse(
                record, 400, _error_body(str(exc), "invalid_request_error", getattr(exc, "param", None))
            )

        body = record.body
        if self._faults:
            return await self._fault(request, record, self._faults.pop(0))
        rule = next((r for r in self.rules if r.when(body)), None)
        if rule is None:
            return self._refuse(record, 500, _error_body("no scripted rule matches this request", "server_error"))
        reply = rule.reply(body) if callable(rule.reply) else rule.reply
        record.rule, record.reply = rule.name, reply

        if is_routed(body):
            branches = reply_branches(body["response_format"]["json_schema"]["schema"])
            if isinstance(reply, ToolCall):
                branch = branches.get(reply.name)
                if branch is None or not _fits(reply.arguments, branch["properties"]["arguments"]):
                    # A constrained decoder could never produce this reply: the script is wrong.
                    return self._refuse(
                        record,
                        500,
                        _error_body(
                            f"scripted call {reply.name} is outside the response_format schema", "server_error"
                        ),
                    )
                text = json.dumps({"tool": reply.name, "arguments": reply.arguments})
            else:
                text = json.dumps({"tool": "none", "answer": reply.text})
            deltas = [{"content": piece} for piece in _pieces(text, 6)]
            finish_reason = "stop"
        elif isinstance(reply, ToolCall):
            declared = {t["function"]["name"] for t in body.get("tools") or []}
            if reply.name not in declared:
                return self._refuse(
                    record,
                    500,
                    _error_body(f"scripted call {reply.name} is not in the request's tools", "server_error"),
                )
            # First the call's index, id, type and name with empty arguments, then the
            # arguments in fragments (function-calling guide, "Streaming").
            call_id = f"call_{uuid.uuid4().hex[:24]}"
            deltas = [
                {
                    "content": None,
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": reply.name, "arguments": ""},
                        }
                    ],
                }
            ]
            deltas += [
                {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}
                for fragment in _split(json.dumps(reply.arguments), reply.fragments)
            ]
            finish_reason = "tool_calls"
        else:
            deltas = [{"content": word} for word in _words(reply.text)]
            finish_reason = "stop"

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        prompt_tokens = _estimate_tokens(body["messages"]) + _estimate_tokens(body.get("tools") or [])
        completion_tokens = len(deltas)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": prompt_tokens // 2, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        return await self._stream(
            request, record, body["model"], deltas, finish_reason, usage if include_usage else None
        )

    async def _fault(self, request: web.Request, record: Recorded, fault: Fault) -> web.StreamResponse:
        record.rule = f"injected {type(fault).__name__}"
        if isinstance(fault, Failure):
            record.status = fault.status
            return web.json_response(_error_body(fault.message, "server_error"), status=fault.status)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        chunk = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": record.body["model"],
            "choices": [],
        }
        deltas = [{"role": "assistant", "content": ""}] + [{"content": w} for w in _words(fault.text) if w]
        try:
            for delta in deltas:
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
                await response.write(f"data: {json.dumps({**chunk, 'choices': [choice]})}\n\n".encode())
            # Then nothing: no finish_reason, no [DONE], the connection left open.
            deadline = time.monotonic() + fault.hold_secs
            while time.monotonic() < deadline and request.transport and not request.transport.is_closing():
                await asyncio.sleep(0.05)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        record.usage = None
        return response

    async def _stream(
        self,
        request: web.Request,
        record: Recorded,
        model: str,
        deltas: list[dict],
        finish_reason: str,
        usage: dict | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())

        def chunk(choices: list[dict], with_usage: dict | None = None) -> dict:
            # The chat completion chunk object: every chunk has the same id, created and
            # model; with include_usage every chunk carries `usage`, null but on the last.
            out = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "service_tier": "default",
                "choices": choices,
            }
            if usage is not None:
                out["usage"] = with_usage
            return out

        def choice(delta: dict, finish: str | None = None) -> dict:
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

        async def send(payload: dict | str) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            await response.write(f"data: {data}\n\n".encode())

        try:
            # The first delta carries the role (streaming guide: the assistant's role, then
            # content or tool_calls deltas).
            first = {
                "role": "assistant",
                **({"content": ""} if "content" in deltas[0] and deltas[0]["content"] is not None else {}),
            }
            if "tool_calls" in deltas[0]:
                first = {"role": "assistant", **deltas.pop(0)}
            await send(chunk([choice({**first, "refusal": None})]))
            for delta in deltas:
                await asyncio.sleep(CHUNK_DELAY_SECS)
                await send(chunk([choice(delta)]))
            # The final choice chunk: an empty delta and the finish_reason.
            await send(chunk([choice({}, finish_reason)]))
            if usage is not None:
                # stream_options.include_usage: one more chunk with `choices: []` and the
                # usage of the whole request, before [DONE].
                await send(chunk([], usage))
                record.usage = usage
            await send("[DONE]")
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            record.error = "client closed the stream early"
            raise
        return response
