"""The embedded llama.cpp LLM with the real Qwen2.5-Coder-0.5B weights: the Pipecat service
(streamed answers, grammar-routed tool calls), cancellation, trimming and concurrent sessions.

One engine is loaded for the whole module. Every request without tools shares one system
prompt, so after the first one llama.cpp reuses its cached prefix and the rest stay fast.
"""

import asyncio
import json
import re
import threading
import time

import pytest
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    ErrorFrame,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    FunctionCallsStartedFrame,
    InterimTranscriptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    MetricsFrame,
)
from pipecat.metrics.metrics import LLMTokenUsage, LLMUsageMetricsData
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.tests.utils import run_test

from bot.processors.context_window import windowed
from bot.processors.speculative_prefill import SpeculativePrefill
from bot.providers.llama.engine import LocalLLMEngine, SlotAffinity
from bot.providers.llama.service import CHARS_PER_TOKEN, LocalLLMService, build_request, routed_request
from bot.providers.llama.weights import ensure_model_file
from bot.providers.tool_routing import REPLY_PREFILL, HistoryWindow, ReplyDecoder, reply_grammar
from bot.settings import Settings
from bot.tools.current_time import get_current_time

CONTEXT_TOKENS = 2048
SYSTEM_PROMPT = Settings().system_prompt


@pytest.fixture(scope="session")
def engine() -> LocalLLMEngine:
    return LocalLLMEngine(
        ensure_model_file("qwen2.5-coder-0.5b", Settings().data_dir),
        threads=2,
        context_tokens_per_slot=CONTEXT_TOKENS,
        parallel_slots=2,
    )


def _request(question: str, max_tokens: int = 40, tools=None) -> dict:
    context = LLMContext(messages=[{"role": "user", "content": question}])
    if tools is not None:
        context = LLMContext(messages=[{"role": "user", "content": question}], tools=tools)
    return build_request(
        context,
        system_prompt=SYSTEM_PROMPT,
        max_tokens=max_tokens,
        temperature=0.0,
        context_tokens=CONTEXT_TOKENS,
    )


async def _answer(engine: LocalLLMEngine, request: dict) -> tuple[str, str]:
    """(raw reply, decoded answer text) of one streamed request."""
    decoder, raw, text = ReplyDecoder(prefill=REPLY_PREFILL), [REPLY_PREFILL], []
    async for chunk in engine.stream_chat(request, threading.Event()):
        for choice in chunk.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content") or ""
            raw.append(piece)
            text.append(decoder.feed(piece))
    return "".join(raw), "".join(text)


# --- the Pipecat service ----------------------------------------------------------------------


@pytest.mark.model
async def test_service_streams_a_plain_answer(engine):
    service = LocalLLMService(engine=engine, system_prompt=SYSTEM_PROMPT, temperature=0.0, max_answer_tokens=40)
    context = LLMContext(messages=[{"role": "user", "content": "What is the capital of France?"}])
    down, up = await asyncio.wait_for(
        run_test(
            service,
            frames_to_send=[LLMContextFrame(context)],
            pipeline_params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
        ),
        timeout=120,
    )
    assert not [f for f in down + up if isinstance(f, ErrorFrame)], up
    kinds = [type(f) for f in down]
    assert LLMFullResponseStartFrame in kinds and LLMFullResponseEndFrame in kinds
    start, end = kinds.index(LLMFullResponseStartFrame), kinds.index(LLMFullResponseEndFrame)
    texts = [f for f in down if isinstance(f, LLMTextFrame)]
    assert texts, kinds
    assert all(start < down.index(f) < end for f in texts)
    answer = "".join(f.text for f in texts)
    assert "paris" in answer.lower(), answer
    # Only the answer string is streamed, never the JSON around it.
    assert "{" not in answer and "}" not in answer and '"tool"' not in answer, answer
    assert '"answer"' not in answer and "none" not in answer.lower(), answer
    # No tool call for a plain question.
    assert not [f for f in down if isinstance(f, (FunctionCallsStartedFrame, FunctionCallInProgressFrame))]
    # Decoded: the token that chose to answer, the answer's tokens and its closing `"}` + EOS.
    # The JSON between (`", "answer": "`, ~6 tokens) was computed as prompt instead.
    usage = [
        data.value
        for frame in down
        if isinstance(frame, MetricsFrame)
        for data in frame.data
        if isinstance(data, LLMUsageMetricsData)
    ]
    assert usage[-1].completion_tokens <= len(texts) + 3, (usage, [f.text for f in texts])


@pytest.mark.model
async def test_service_calls_the_registered_tool(engine):
    service = LocalLLMService(engine=engine, system_prompt=SYSTEM_PROMPT, temperature=0.0)
    context = LLMContext(
        messages=[{"role": "user", "content": "What time is it in Tokyo?"}],
        tools=ToolsSchema(standard_tools=[get_current_time]),
    )
    down, up = await asyncio.wait_for(run_test(service, frames_to_send=[LLMContextFrame(context)]), timeout=120)
    assert not [f for f in down + up if isinstance(f, ErrorFrame)], up
    started = [f for f in down if isinstance(f, FunctionCallsStartedFrame)]
    assert len(started) == 1, [type(f).__name__ for f in down]
    (call,) = started[0].function_calls
    assert call.function_name == "get_current_time"
    assert call.arguments == {"timezone": "Asia/Tokyo"}
    assert call.context is context

    in_progress = [f for f in down if isinstance(f, FunctionCallInProgressFrame)]
    assert [(f.function_name, f.arguments) for f in in_progress] == [("get_current_time", {"timezone": "Asia/Tokyo"})]
    # The real tool ran (auto-registered from the context's direct function) and answered.
    results = [f for f in down if isinstance(f, FunctionCallResultFrame)]
    assert len(results) == 1
    assert results[0].tool_call_id == in_progress[0].tool_call_id == call.tool_call_id
    assert results[0].result["timezone"] == "Asia/Tokyo"
    assert len(results[0].result["time"]) == 5 and results[0].result["time"][2] == ":"
    # A tool call is not spoken: no text leaks out of the JSON.
    assert "".join(f.text for f in down if isinstance(f, LLMTextFrame)) == ""


# --- the engine -------------------------------------------------------------------------------


@pytest.mark.model
async def test_cancel_stops_a_long_generation(engine):
    request = {
        **_request("Tell me a very long story about a dragon.", max_tokens=400),
        # Answers only, so nothing but the story can be generated.
        "grammar": reply_grammar([], allow_tools=False),
    }
    cancelled = threading.Event()
    chunks, set_at, ended_at = 0, None, None

    async def consume():
        nonlocal chunks, set_at, ended_at
        async for chunk in engine.stream_chat(request, cancelled):
            if chunk.get("choices") and (chunk["choices"][0].get("delta") or {}).get("content"):
                chunks += 1
                if set_at is None:
                    set_at = time.monotonic()
                    cancelled.set()
        ended_at = time.monotonic()

    await asyncio.wait_for(consume(), timeout=120)
    assert set_at is not None
    assert ended_at - set_at < 1.5, f"stream ran {ended_at - set_at:.2f}s after cancel"
    assert chunks < 20, f"{chunks} tokens generated after cancel"
    assert engine.active_requests == 0

    # The slot is free again: the next request is answered normally.
    _, answer = await asyncio.wait_for(_answer(engine, _request("What is the capital of France?")), 120)
    assert "paris" in answer.lower(), answer


@pytest.mark.model
async def test_consumer_task_cancellation_frees_the_request(engine):
    """Cancelling the consuming task (an interruption) stops decoding too."""
    request = {**_request("Tell me a very long story about a cat.", max_tokens=400)}
    first = asyncio.Event()
    tokens = 0

    async def consume():
        nonlocal tokens
        async for _chunk in engine.stream_chat(request, threading.Event()):
            tokens += 1
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), timeout=120)
    task.cancel()
    began = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=10)
    assert time.monotonic() - began < 1.5
    assert engine.active_requests == 0
    assert tokens < 20


@pytest.mark.model
async def test_concurrent_sessions_get_their_own_answers(engine):
    questions = {
        "What is the capital of France?": "paris",
        "What is the capital of Japan?": "tokyo",
    }
    peak = 0

    async def watch():
        nonlocal peak
        while True:
            peak = max(peak, engine.active_requests)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(_answer(engine, _request(q)) for q in questions)), timeout=180
        )
    finally:
        watcher.cancel()
    assert peak == 2, "the two sessions were not decoded side by side"
    for (question, expected), (raw, answer) in zip(questions.items(), results):
        assert raw.lstrip().startswith("{"), raw
        assert expected in answer.lower(), (question, answer)
    assert "tokyo" not in results[0][1].lower() and "paris" not in results[1][1].lower()
    assert engine.active_requests == 0


async def _replies_side_by_side(engine: LocalLLMEngine, questions: list[str], max_tokens=40):
    """Each question asked in its own session at once; returns the engine's events in order:
    ("request", session, "") when a request starts, ("text", session, piece) for each piece
    of reply generated, ("computed", session, "N") when a request ends having computed N
    prompt tokens (the rest came from its KV cache)."""
    events, sessions = (
        [],
        [
            LocalLLMService(
                engine=engine,
                system_prompt=SYSTEM_PROMPT,
                temperature=0.0,
                max_answer_tokens=max_tokens,
            )
            for _ in questions
        ],
    )
    stream_chat = engine.stream_chat

    async def recorded(request, cancelled, session=None):
        events.append(("request", session, ""))
        async for chunk in stream_chat(request, cancelled, session=session):
            for choice in chunk.get("choices") or []:
                if piece := (choice.get("delta") or {}).get("content"):
                    events.append(("text", session, piece))
            if timings := chunk.get("timings"):
                events.append(("computed", session, str(timings.get("prompt_n"))))
            yield chunk

    engine.stream_chat = recorded
    try:
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    run_test(
                        service,
                        frames_to_send=[LLMContextFrame(LLMContext(messages=[{"role": "user", "content": question}]))],
                    )
                    for service, question in zip(sessions, questions)
                )
            ),
            timeout=180,
        )
    finally:
        del engine.stream_chat
    return events, [service._session_key for service in sessions]


@pytest.mark.model
async def test_replies_compute_their_first_sentences_one_after_another(engine):
    """On a CPU two replies batched together decode no faster than one after the other, so
    the first turn's reply runs alone until its answer is out; then the second starts."""
    events, (first, second) = await _replies_side_by_side(
        engine, ["What is the capital of France?", "What is the capital of Japan?"]
    )
    second_starts = events.index(("request", second, ""))
    assert "Paris" in "".join(e[2] for e in events[:second_starts] if e[1] == first), events
    assert [e for e in events[:second_starts] if e[1] == second] == []
    assert engine.active_requests == 0 and not engine.replies_pending


@pytest.mark.model
async def test_a_long_reply_lets_the_next_start_after_its_first_sentence(engine):
    events, (long, short) = await _replies_side_by_side(
        engine,
        ["Describe the moon in three sentences.", "What is the capital of Japan?"],
        max_tokens=70,
    )
    short_starts = events.index(("request", short, ""))
    before, after = (
        "".join(e[2] for e in part if e[1] == long) for part in (events[:short_starts], events[short_starts:])
    )
    assert re.search(r"[.!?] ", before), (before, after)  # its first sentence, at least
    assert re.search(r"[a-z]{3}", after), (before, after)  # not its whole reply


@pytest.mark.model
async def test_an_answer_pauses_while_the_next_reply_computes_its_first_sentence(engine):
    """Past its first sentence a reply stops decoding while a later turn's reply computes
    its first, then goes on from the word it had reached, its words still in its KV cache."""
    events, (long, short) = await _replies_side_by_side(
        engine,
        ["Describe the moon in three sentences.", "What is the capital of Japan?"],
        max_tokens=70,
    )
    short_starts = events.index(("request", short, ""))
    short_done = next(i for i, e in enumerate(events) if e[1] == short and '"' in e[2] and i > short_starts)

    def text(part):
        return "".join(e[2] for e in part if e[0] == "text" and e[1] == long)

    assert len(text(events[short_starts:short_done]).split()) <= 2  # the token under way
    before, after = text(events[:short_starts]), text(events[short_done:])
    first_sentence = re.match(r"none(.+?[.!?]) ", before).group(1)
    assert re.search(r"[a-z]{3}.*[.!?]", after), (before, after)  # it went on, to the end
    assert (before + after).count(first_sentence) == 1, (before, after)  # not from the start
    assert events.count(("request", long, "")) == 3  # route, answer, the answer resumed
    resumed = events.index(("request", long, ""), short_starts)
    computed = int(next(e[2] for e in events[resumed:] if e[0] == "computed" and e[1] == long))
    assert computed <= 3, computed
    assert engine.active_requests == 0 and not engine.replies_pending


TOOLS = ToolsSchema(standard_tools=[get_current_time])


@pytest.fixture(scope="module")
async def warm_engine() -> tuple[LocalLLMEngine, dict[int, int]]:
    """An engine of three slots, warmed as the server warms it."""
    engine = LocalLLMEngine(
        ensure_model_file("qwen2.5-coder-0.5b", Settings().data_dir),
        threads=2,
        context_tokens_per_slot=CONTEXT_TOKENS,
        parallel_slots=3,
    )
    restored = await engine.warm_up(_request("Hello!", tools=TOOLS))
    return engine, restored


async def _timings(engine: LocalLLMEngine, messages: list[dict], session: str | None = None) -> tuple[str, dict]:
    """(answer, llama.cpp's timings) of one request for a conversation."""
    request = build_request(
        LLMContext(messages=messages, tools=TOOLS),
        system_prompt=SYSTEM_PROMPT,
        max_tokens=24,
        temperature=0.0,
        context_tokens=CONTEXT_TOKENS,
    )
    decoder, text, timings = ReplyDecoder(prefill=REPLY_PREFILL), [], {}
    async for chunk in engine.stream_chat(request, threading.Event(), session=session):
        for choice in chunk.get("choices") or []:
            text.append(decoder.feed((choice.get("delta") or {}).get("content") or ""))
        timings = chunk.get("timings") or timings
    return "".join(text), timings


@pytest.mark.model
async def test_warm_up_puts_the_shared_prefix_in_every_slot(warm_engine):
    """Sessions that arrive together each land on a slot that already holds the system
    prompt and tools: none prefills them while the others wait on its batch."""
    engine, restored = warm_engine
    prefix = min(restored.values())
    assert set(restored) == {1, 2} and prefix > 500, restored

    questions = ["What is the capital of Peru?", "How many legs does a spider have?", "Which ocean is the largest?"]
    results = await asyncio.wait_for(
        asyncio.gather(*(_timings(engine, [{"role": "user", "content": q}]) for q in questions)),
        timeout=120,
    )
    for question, (_, timings) in zip(questions, results):
        assert timings["cache_n"] >= prefix - 20, (question, timings)
        assert timings["prompt_n"] < 40, (question, timings)


@pytest.mark.model
async def test_each_session_keeps_its_conversation_cached(warm_engine):
    """Three sessions taking turns: each one's second turn finds its first turn still in the
    KV cache and prefills only the new question (plus the template's few tokens), though
    the others' requests came in between and every slot held the same prefix."""
    engine, _ = warm_engine
    first = ["What is the capital of Peru?", "How many legs does a spider have?", "Which ocean is the largest?"]
    conversations = [[{"role": "user", "content": q}] for q in first]
    before = []
    for index, conversation in enumerate(conversations):
        answer, timings = await _timings(engine, conversation, session=f"session-{index}")
        conversation += [
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "Can you say that again?"},
        ]
        before.append(timings)
    for index, conversation in enumerate(conversations):
        _, after = await _timings(engine, conversation, session=f"session-{index}")
        first_turn = before[index]["prompt_n"] + before[index]["cache_n"]
        assert after["cache_n"] >= first_turn, (first[index], before[index], after)
        assert after["prompt_n"] < 40, (first[index], before[index], after)


def _turn_request(messages: list[dict]) -> dict:
    return build_request(
        LLMContext(messages=messages, tools=TOOLS),
        system_prompt=SYSTEM_PROMPT,
        max_tokens=24,
        temperature=0.0,
        context_tokens=CONTEXT_TOKENS,
    )


@pytest.mark.model
async def test_prefill_from_interim_words_leaves_the_turn_little_to_compute(warm_engine):
    """A session prefilled with the words heard so far ("What is the capital of")
    computes only the rest of its prompt when the turn ends; one that was not computes the
    whole question and the template around it."""
    engine, _ = warm_engine
    hello = [{"role": "user", "content": "Hello!"}]
    for session in ("cold", "prefilled"):
        greeting, _ = await _timings(engine, hello, session=session)  # each slot holds its turn
    history = [*hello, {"role": "assistant", "content": greeting}]
    question = {"role": "user", "content": "What is the capital of France?"}
    engine.prefill(
        _turn_request([*history, {"role": "user", "content": "What is the capital of"}]),
        session="prefilled",
    )
    # The turn's request waits for the prefill still running on its slot, then reuses it.
    answer, prefilled = await _timings(engine, [*history, question], session="prefilled")
    _, cold = await _timings(engine, [*history, question], session="cold")
    assert "paris" in answer.lower(), answer
    assert prefilled["cache_n"] > cold["cache_n"], (prefilled, cold)
    assert prefilled["prompt_n"] <= 12 and cold["prompt_n"] >= prefilled["prompt_n"] + 6, (prefilled, cold)


@pytest.mark.model
async def test_interim_words_reach_the_engine_through_the_pipeline(warm_engine):
    """SpeculativePrefill hands an interim transcript to the LLM service, which prefills it:
    the answer that follows computes few new prompt tokens (its usage metrics say so), and
    every frame still passes on."""
    engine, _ = warm_engine

    async def new_prompt_tokens(interim: str | None) -> int:
        service = LocalLLMService(engine=engine, system_prompt=SYSTEM_PROMPT, temperature=0.0, max_answer_tokens=24)
        history = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi! How can I help?"}]
        context = LLMContext(messages=history, tools=TOOLS)
        final = LLMContext(
            messages=[*history, {"role": "user", "content": "Which ocean is the largest?"}],
            tools=TOOLS,
        )
        heard = [InterimTranscriptionFrame(interim, "user", "now")] if interim else []
        down, _ = await run_test(
            Pipeline([SpeculativePrefill(service, context), service]),
            frames_to_send=[*heard, LLMContextFrame(final)],
            pipeline_params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
        )
        assert [f for f in down if isinstance(f, InterimTranscriptionFrame)] == heard
        usage = [
            data.value
            for frame in down
            if isinstance(frame, MetricsFrame)
            for data in frame.data
            if isinstance(data, LLMUsageMetricsData)
        ]
        return usage[-1].prompt_tokens - usage[-1].cache_read_input_tokens

    prefilled = await new_prompt_tokens("Which ocean is the")
    cold = await new_prompt_tokens(None)
    # Either way the answer's JSON opening (~7 tokens) is computed as prompt after the first
    # token chose to answer.
    assert prefilled <= 20 and cold >= prefilled + 6, (prefilled, cold)


@pytest.mark.model
async def test_the_last_answer_is_prefilled_before_the_user_speaks_again(warm_engine):
    """A tool round (call, result, spoken sentence) is ~100 tokens no request computed; the
    service computes them while the sentence is spoken (the context holds the result, the
    sentence is given), or once it is in the context, so the next turn's request computes
    only its own words."""
    engine, _ = warm_engine
    history = [
        {"role": "user", "content": "What time is it in Tokyo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_current_time", "arguments": '{"timezone": "Asia/Tokyo"}'},
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "c1",
            "content": '{"timezone": "Asia/Tokyo", "time": "06:19", "summary": "In Tokyo it is 6:19 AM."}',
        },
        {"role": "assistant", "content": "In Tokyo it is 6:19 AM on Thursday, December 3."},
    ]
    question = {"role": "user", "content": "Which ocean is the largest?"}

    async def new_prompt_tokens(prefilled: str | None) -> int:
        service = LocalLLMService(engine=engine, system_prompt=SYSTEM_PROMPT, temperature=0.0, max_answer_tokens=24)
        if prefilled == "heard":
            service.prefill_user_turn(LLMContext(messages=history, tools=TOOLS), "")
        elif prefilled == "being spoken":
            *with_result, spoken = history
            service.prefill_user_turn(
                LLMContext(messages=with_result, tools=TOOLS), "", answer_spoken=spoken["content"]
            )
        down, _ = await run_test(
            service,
            frames_to_send=[LLMContextFrame(LLMContext(messages=[*history, question], tools=TOOLS))],
            pipeline_params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
        )
        usage = [
            data.value
            for frame in down
            if isinstance(frame, MetricsFrame)
            for data in frame.data
            if isinstance(data, LLMUsageMetricsData)
        ]
        return usage[-1].prompt_tokens - usage[-1].cache_read_input_tokens

    cold = await new_prompt_tokens(None)
    heard = await new_prompt_tokens("heard")
    cold_again = await new_prompt_tokens(None)
    being_spoken = await new_prompt_tokens("being spoken")
    assert heard <= 30 and cold >= heard + 40, (heard, cold)
    assert being_spoken <= 30 and cold_again >= being_spoken + 40, (being_spoken, cold_again)


@pytest.mark.model
async def test_a_conversation_whose_oldest_turns_were_dropped_is_not_computed_again(warm_engine):
    """The context window drops the oldest turns and everything after them moves up: the
    request reuses their cached tokens where they now are, and computes only its new words.
    The conversation (opened by a greeting, as a session's is) is longer than the shared
    prefix, so the request keeps under half of its slot: llama.cpp must not trade the slot
    for the cached bare prefix then."""
    engine, restored = warm_engine
    greeting = {"role": "assistant", "content": "Hello! Ask me anything, or for a chart."}
    turns = [greeting] + [
        message
        for i in range(14)
        for message in (
            {"role": "user", "content": f"Tell me one fact about the number {i}, in a full sentence."},
            {"role": "assistant", "content": f"The number {i} comes right after {i - 1} and right before {i + 1}."},
        )
    ]
    _, first = await _timings(
        engine, [*turns, {"role": "user", "content": "Which ocean is the largest?"}], session="long"
    )
    assert first["prompt_n"] + first["cache_n"] > 2 * min(restored.values()), first
    kept = windowed(turns, 8)
    assert kept is not None and len(kept) < len(turns)
    _, timings = await _timings(engine, [*kept, {"role": "user", "content": "And the smallest?"}], session="long")
    assert timings["prompt_n"] <= 30, timings


@pytest.mark.model
async def test_the_request_after_a_longer_prefill_sends_back_no_turn_the_prefill_dropped(warm_engine):
    """The prefill of the answer being spoken (a longer prompt) drops the oldest turn to fit;
    the request that follows it, shorter, would fit with that turn, but sending it back would
    put it before every cached token: the session's window starts it where the prefill did."""
    engine, _ = warm_engine
    window = HistoryWindow()

    def request(messages: list[dict]) -> dict:
        built, _ = routed_request(
            LLMContext(messages=messages, tools=TOOLS),
            system_prompt=SYSTEM_PROMPT,
            max_tokens=24,
            temperature=0.0,
            context_tokens=CONTEXT_TOKENS,
            window=window,
        )
        return built

    async def computed(built: dict) -> int:
        timings: dict = {}
        async for chunk in engine.stream_chat({**built, "max_tokens": 1}, threading.Event(), session="spoken"):
            timings = chunk.get("timings") or timings
        return timings["prompt_n"]

    budget = (CONTEXT_TOKENS - 24) * CHARS_PER_TOKEN - len(request([])["messages"][0]["content"])
    turns: list[dict] = []
    while sum(len(json.dumps(m)) for m in turns) < budget - 400:
        i = len(turns) // 2
        turns += [
            {"role": "user", "content": f"What is {i} times {i + 1}?"},
            {"role": "assistant", "content": f"{i} times {i + 1} is {i * (i + 1)}, an even number."},
        ]
    question = {"role": "user", "content": "And 7 times 9?"}
    await computed(request([*turns, question]))
    spoken = {"role": "assistant", "content": "7 times 9 is 63, an odd number. " * 12}
    prefill = request([*turns, question, spoken])
    assert len(prefill["messages"]) < len(turns) + 3, "the prefill's prompt must drop a turn"
    await computed({**prefill, "messages": prefill["messages"][:-1]})
    # The user went on before hearing it: the request holds the question whole, not the answer.
    whole = [*turns, {"role": "user", "content": "And 7 times 9, and 8 times 9?"}]
    assert HistoryWindow().trim(whole, budget) == whole, "alone, it fits with the turn the prefill dropped"
    assert await computed(request(whole)) <= 40


@pytest.mark.model
async def test_a_tool_call_computes_its_opening_as_prompt(engine):
    """Once the first token tells the tool apart (two names share "get"), the call's opening
    up to its arguments is prompt, not decoded token by token: the reply generates only the
    choice and the arguments."""
    from bot.tools.get_realtime_data import get_realtime_data

    # Japan is no city of the timezone database: the model writes the timezone itself.
    calls, usage = await _calls_and_usage(engine, "What time is it in Japan?", [get_current_time, get_realtime_data])
    assert [name for name, _ in calls] == ["get_current_time"]
    assert calls[0][1]["timezone"] in ("Asia/Tokyo", "Japan"), calls
    # '{"timezone": "Asia/Tokyo"}}' is ~10 tokens; the name and '", "arguments": ' ~8 more.
    assert usage.completion_tokens <= 14, usage


async def _calls_and_usage(engine, question: str, tools: list) -> tuple[list[tuple[str, dict]], LLMTokenUsage]:
    service = LocalLLMService(engine=engine, system_prompt=SYSTEM_PROMPT, temperature=0.0)
    context = LLMContext(messages=[{"role": "user", "content": question}], tools=ToolsSchema(standard_tools=tools))
    down, up = await asyncio.wait_for(
        run_test(
            service,
            frames_to_send=[LLMContextFrame(context)],
            pipeline_params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
        ),
        timeout=120,
    )
    assert not [f for f in down + up if isinstance(f, ErrorFrame)], up
    (started,) = [f for f in down if isinstance(f, FunctionCallsStartedFrame)]
    (usage,) = [
        data.value
        for frame in down
        if isinstance(frame, MetricsFrame)
        for data in frame.data
        if isinstance(data, LLMUsageMetricsData)
    ]
    return [(c.function_name, c.arguments) for c in started.function_calls], usage


@pytest.mark.model
@pytest.mark.parametrize(
    "question, call",
    [
        ("What time is it in Tokyo?", ("get_current_time", {"timezone": "Asia/Tokyo"})),
        ("How much memory is the server using?", ("get_realtime_data", {"metric": "memory"})),
        ("Make a pie chart of my budget: rent 800, food 300", ("generate_chart", {"chart_type": "pie"})),
        ("Is this review positive: the food was cold", ("analyze_sentiment", {"target": "text"})),
    ],
)
async def test_a_call_whose_arguments_can_only_be_one_thing_decodes_none_of_them(engine, question, call):
    """The request leaves each argument one value: once the first token has chosen the tool,
    the call is complete, with no argument decoded token by token."""
    from bot.tools import ALL_TOOLS

    calls, usage = await _calls_and_usage(engine, question, ALL_TOOLS)
    assert calls == [call]
    # The token that chose the tool, and one more where two names share their start.
    assert usage.completion_tokens <= 2, usage


@pytest.mark.model
async def test_prefill_waits_for_an_idle_engine(warm_engine):
    """llama.cpp decodes every running request in one batch: a prefill started beside another
    session's answer would slow that answer, so none is started while one is decoding."""
    engine, _ = warm_engine
    hello = [{"role": "user", "content": "Hello!"}]
    greeting, _ = await _timings(engine, hello, session="listener")
    history = [*hello, {"role": "assistant", "content": greeting}]
    busy = asyncio.create_task(_timings(engine, [{"role": "user", "content": "Count to forty."}]))
    deadline = time.monotonic() + 30
    while engine.active_requests == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert engine.active_requests == 1
    engine.prefill(
        _turn_request([*history, {"role": "user", "content": "How many legs does a"}]),
        session="listener",
    )
    await busy
    _, timings = await _timings(
        engine,
        [*history, {"role": "user", "content": "How many legs does a spider have?"}],
        session="listener",
    )
    assert timings["prompt_n"] >= 15, timings  # nothing of the question was prefilled


@pytest.mark.unit
def test_slot_affinity_returns_a_session_to_its_own_slot():
    slots = SlotAffinity(2)
    a, b = slots.acquire("a"), slots.acquire("b")
    assert {a, b} == {0, 1}
    assert slots.acquire("c") is None  # every slot busy: llama.cpp queues the request
    slots.release(b)
    slots.release(a)
    assert slots.acquire("b") == b and slots.acquire("a") == a
    slots.release(a)
    slots.release(b)
    # A newcomer takes the slot released longest ago, and then owns it.
    assert slots.acquire("c") == a
    slots.release(a)
    assert slots.acquire("c") == a  # c's own slot now
    # a lost its slot to c: it takes the free one released longest ago.
    assert slots.acquire("a") == b


# --- build_request (no model) -----------------------------------------------------------------


def _long_conversation(turns: int, words: int = 60) -> list[dict]:
    messages = []
    for i in range(turns):
        messages.append({"role": "user", "content": f"Question {i}: " + "blah " * words})
        messages.append({"role": "assistant", "content": f"Answer {i}: " + "yada " * words})
    messages.append({"role": "user", "content": "Final question: what is the capital of France?"})
    return messages


@pytest.mark.unit
def test_build_request_trims_old_turns_to_the_budget():
    context = LLMContext(messages=[{"role": "system", "content": "Extra rule."}, *_long_conversation(60)])
    request = build_request(context, system_prompt="SYS", max_tokens=80, temperature=0.2, context_tokens=2048)
    *routed, prefill = request["messages"]
    assert prefill == {"role": "assistant", "content": REPLY_PREFILL}
    total = sum(len(m["content"]) for m in routed)
    assert total <= (2048 - 80) * 3.0
    assert len(routed) < 1 + 121
    # The system prompt (with the context's own system message) and the last question stay.
    assert routed[0]["role"] == "system"
    assert routed[0]["content"].startswith("SYS\n\nAlways reply with one JSON object.")
    assert routed[0]["content"].endswith("\n\nExtra rule.")
    assert routed[-1] == {"role": "user", "content": "Final question: what is the capital of France?"}
    # The turns kept are the newest ones, in order.
    numbers = [int(re.search(r"(?:Question|Answer) (\d+):", m["content"])[1]) for m in routed[1:-1]]
    assert numbers == sorted(numbers) and numbers[0] > 0 and numbers[-1] == 59
    # Assistant turns come back in the JSON-reply format.
    assert routed[-2]["content"].startswith('{"tool": "none", "answer": "Answer 59: ')
    assert request["max_tokens"] == 80 and request["temperature"] == 0.2
    assert request["cache_prompt"] is True


@pytest.mark.unit
def test_build_request_keeps_short_conversations_whole():
    messages = _long_conversation(3, words=5)
    request = build_request(
        LLMContext(messages=messages),
        system_prompt="SYS",
        max_tokens=80,
        temperature=0.2,
        context_tokens=2048,
    )
    assert len(request["messages"]) == 1 + len(messages) + 1


@pytest.mark.unit
def test_build_request_with_a_tiny_budget_keeps_system_and_last_message():
    request = build_request(
        LLMContext(messages=_long_conversation(5)),
        system_prompt="SYS",
        max_tokens=80,
        temperature=0.2,
        context_tokens=100,
    )
    assert [m["role"] for m in request["messages"]] == ["system", "user", "assistant"]
    assert request["messages"][-2]["content"].startswith("Final question")


@pytest.mark.unit
def test_build_request_disallows_tools_after_a_tool_round():
    tools = ToolsSchema(standard_tools=[get_current_time])
    messages = [{"role": "user", "content": "What time is it in Tokyo?"}]
    first = build_request(
        LLMContext(messages=messages, tools=tools),
        system_prompt="S",
        max_tokens=80,
        temperature=0.2,
        context_tokens=2048,
    )
    assert "get_current_time" in first["grammar"]
    messages += [
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_current_time", "arguments": '{"timezone": "Asia/Tokyo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"time": "09:30"}'},
    ]
    second = build_request(
        LLMContext(messages=messages, tools=tools),
        system_prompt="S",
        max_tokens=80,
        temperature=0.2,
        context_tokens=2048,
    )
    assert "get_current_time" not in second["grammar"]
    assert second["messages"][-2] == {"role": "user", "content": '(tool result) {"time": "09:30"}'}
    # A new user turn allows tools again.
    messages += [{"role": "assistant", "content": "It is 9:30."}, {"role": "user", "content": "And in Paris?"}]
    third = build_request(
        LLMContext(messages=messages, tools=tools),
        system_prompt="S",
        max_tokens=80,
        temperature=0.2,
        context_tokens=2048,
    )
    assert "get_current_time" in third["grammar"]


@pytest.mark.unit
def test_build_request_with_a_tiny_budget_keeps_the_question_a_tool_result_answers():
    messages = _long_conversation(5) + [
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_current_time", "arguments": '{"timezone": "Asia/Tokyo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"time": "11:32"}'},
    ]
    request = build_request(
        LLMContext(messages=messages),
        system_prompt="SYS",
        max_tokens=80,
        temperature=0.2,
        context_tokens=100,
    )
    contents = [m["content"] for m in request["messages"]]
    assert contents[1].startswith("Final question"), contents
    assert '"get_current_time"' in contents[2] and "11:32" in contents[3]
