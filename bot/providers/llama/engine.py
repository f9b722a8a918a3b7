"""The embedded LLM: one llama.cpp server (xllamacpp, in-process) shared by every session.

llama.cpp's server keeps `parallel` KV-cache slots and batches the sessions that decode at
the same time; each request carries its session's whole conversation, so sessions never see
each other's context, and the cached prefix (system prompt) is reused across turns. Its
request handler blocks until the completion ends, so it runs on a worker thread and hands
chunks to the event loop through a queue; the chunk callback is also where a cancelled
request (barge-in, disconnect) stops decoding, within one token.
"""

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Hashable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import xllamacpp
from loguru import logger

PROMPT_CACHE_MIB = 256
# Shortest run of cached tokens llama.cpp reuses, shifted, at a new position in a prompt. When
# the context window drops a session's oldest turns, everything after them moves up: without
# reuse the whole rest of the conversation was prefilled again (~1,650 tokens, 13-29 s on 2
# cores, stalling every session meanwhile); with it, only the tokens that are new.
CACHE_REUSE_MIN_TOKENS = 64


class LLMEngineError(RuntimeError):
    """The engine answered a request with an error."""


class SlotAffinity:
    """Keeps each session on the KV slot that holds its conversation.

    Left to itself, llama.cpp gives a request the idle slot most similar to it, and every
    slot starts with the same 1.4k-token prefix, so with several sessions talking a request
    often landed on another session's slot and prefilled its whole conversation again
    (66-134 new tokens instead of ~30, 0.6-1.5 s under load). A session gets its own slot
    back while it is free; otherwise the least recently used free slot (and becomes its
    owner). With every slot busy the request names none and llama.cpp queues it.
    """

    def __init__(self, slots: int):
        self._owner: list[Hashable | None] = [None] * slots
        self._busy = [False] * slots
        self._released_at = [0.0] * slots

    def acquire(self, session: Hashable, *, own_only: bool = False) -> int | None:
        """A free slot for `session`; with `own_only`, None rather than another session's
        slot while its own is busy."""
        free = [slot for slot, busy in enumerate(self._busy) if not busy]
        own = [slot for slot in free if self._owner[slot] == session]
        if own_only and not own and session in self._owner:
            return None
        if not free:
            return None
        slot = own[0] if own else min(free, key=lambda s: self._released_at[s])
        self._owner[slot], self._busy[slot] = session, True
        return slot

    def release(self, slot: int) -> None:
        self._busy[slot] = False
        self._released_at[slot] = time.monotonic()


class FirstSentenceTurns:
    """Replies take turns computing their first sentence, in the order their turns ended
    (`LocalLLMService`). On this CPU a batch of N replies decodes no faster than N replies in
    a row, so computed side by side every reply reached its first audio last."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._none_pending = asyncio.Event()
        self._none_pending.set()

    @property
    def pending(self) -> bool:
        """Whether a reply is computing its first sentence or waiting to."""
        return self._lock.locked() or self._waiting > 0

    async def acquire(self) -> None:
        self._waiting += 1
        self._none_pending.clear()
        try:
            await self._lock.acquire()
        finally:
            self._waiting -= 1
            self._note_if_none_pending()

    def release(self) -> None:
        self._lock.release()
        self._note_if_none_pending()

    async def wait_until_none_pending(self) -> None:
        await self._none_pending.wait()

    def _note_if_none_pending(self) -> None:
        if not self.pending:
            self._none_pending.set()


class LocalLLMEngine:
    def __init__(
        self,
        model_path: Path,
        *,
        threads: int = 2,
        context_tokens_per_slot: int = 2048,
        parallel_slots: int = 4,
        serial_replies: bool = True,
    ):
        params = xllamacpp.CommonParams()
        params.model.path = str(model_path)
        params.n_parallel = parallel_slots
        params.n_ctx = context_tokens_per_slot * parallel_slots
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        # The host-memory prompt cache (llama.cpp keeps idle slots' KV there and restores the
        # best match into the slot a request lands on) is how every slot gets the shared
        # prefix without prefilling it; bounded so it holds a few conversations, not 8 GiB.
        params.cache_ram_mib = PROMPT_CACHE_MIB
        params.n_cache_reuse = CACHE_REUSE_MIN_TOKENS
        # Every request names its slot (`SlotAffinity`), which holds its session's conversation.
        # With a similarity threshold llama.cpp still weighs that slot against the prompt cache:
        # once the context window drops a session's oldest turn, the request shares only the
        # system prompt with its slot, under half of it, and llama.cpp swapped the conversation
        # for the cached bare prefix, so the whole rest was computed again instead of shifted
        # (docs/decisions/2026-12-06-long-session-stall.md). At 0 a named slot is used as it is.
        params.slot_prompt_similarity = 0.0
        # llama.cpp turns flash attention on for the CPU by default; on these CPUs (AVX, no
        # AVX2) the plain attention is faster: with the 1.4k-token prefix a token decodes in
        # 19.6 ms instead of 21.1, and 6 new prompt tokens in 64 ms instead of 78.
        params.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.verbosity = -1
        self.context_tokens_per_slot = context_tokens_per_slot
        self.parallel_slots = parallel_slots
        self.model_name = model_path.name
        self._server = xllamacpp.Server(params)
        # Each request holds a thread for its whole generation: give them their own pool so
        # they never starve the STT/TTS work in the loop's default executor. Requests beyond
        # the slot count queue inside llama.cpp.
        self._threads = ThreadPoolExecutor(parallel_slots * 2, thread_name_prefix="llm")
        self._active = 0
        self._active_lock = threading.Lock()
        self._slots = SlotAffinity(parallel_slots)
        self.first_sentence_turns = FirstSentenceTurns() if serial_replies else None
        # Per session: the prefill running on its slot, and the newest one asked for meanwhile.
        self._prefills: dict[Hashable, asyncio.Task] = {}
        self._next_prefill: dict[Hashable, dict[str, Any]] = {}

    @property
    def active_requests(self) -> int:
        return self._active

    @property
    def replies_pending(self) -> bool:
        """Whether a reply is computing its first sentence or waiting to."""
        return self.first_sentence_turns is not None and self.first_sentence_turns.pending

    async def stream_chat(
        self,
        request: dict[str, Any],
        cancelled: threading.Event,
        session: Hashable | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield the OpenAI-style chunks of a streamed chat completion.

        Setting `cancelled` (or cancelling the consuming task) stops decoding at the next token.
        Requests of the same `session` go to the same KV slot when they can (`SlotAffinity`).
        """
        if session is not None:
            self._next_prefill.pop(session, None)
            if (prefill := self._prefills.get(session)) is not None:
                # It is computing this request's likely prefix on the session's slot: finishing
                # it costs less than taking another slot and prefilling the conversation there.
                await asyncio.shield(prefill)
        async for chunk in self._stream(request, cancelled, session):
            yield chunk

    def prefill(self, request: dict[str, Any], session: Hashable) -> None:
        """Compute `request`'s prompt into `session`'s KV slot ahead of the request that will
        need it, in the background (speculative: a request whose prompt shares the prefix
        reuses it, any other overwrites it).

        While the user is still speaking, their interim words give most of the next prompt;
        prefilled then, the final request computes only the rest: ~11 tokens (0.13 s on 2
        cores) instead of ~35 (0.33 s). It runs only while the engine has nothing else to
        do, one at a time; asked for while the session's own prefill runs, the newest request
        waits for it and older waiting ones are dropped.
        """
        if session in self._prefills:
            self._next_prefill[session] = request
            return
        if (slot := self._idle_slot(session)) is not None:
            self._prefills[session] = asyncio.create_task(self._prefill(request, session, slot))

    def _idle_slot(self, session: Hashable) -> int | None:
        # Only on an idle engine: llama.cpp decodes every running request in one batch, so
        # a guess computed beside another session's answer would slow that answer down (at 4
        # sessions, prefilling on every interim raised p95 voice-to-voice from 3.1 to 5.9 s).
        if self._active or self._prefills or self.replies_pending:
            return None
        return self._slots.acquire(session, own_only=True)

    async def _prefill(self, request: dict[str, Any], session: Hashable, slot: int) -> None:
        try:
            while True:
                # One token is the least llama.cpp decodes; max_tokens 0 also decodes one.
                one_token = {**request, "max_tokens": 1, "id_slot": slot}
                try:
                    async for chunk in self._stream(one_token, threading.Event(), None, slot=slot):
                        if timings := chunk.get("timings"):
                            logger.debug(
                                f"LLM prefill on slot {slot}: {timings.get('prompt_n')} new +"
                                f" {timings.get('cache_n')} cached tokens in {timings.get('prompt_ms', 0):.0f} ms"
                            )
                except LLMEngineError as e:  # only a guess failed; the real request will tell
                    logger.debug(f"LLM prefill failed: {e}")
                next_request = self._next_prefill.pop(session, None)
                del self._prefills[session]
                if next_request is None or (next_slot := self._idle_slot(session)) is None:
                    return
                request, slot = next_request, next_slot
                this_task = asyncio.current_task()
                assert this_task is not None  # _prefill only runs as the task _prefills holds
                self._prefills[session] = this_task
        finally:
            self._prefills.pop(session, None)
            self._next_prefill.pop(session, None)  # nothing kept for a session that ended

    async def _stream(
        self,
        request: dict[str, Any],
        cancelled: threading.Event,
        session: Hashable | None,
        *,
        slot: int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        if slot is None and session is not None:
            slot = self._slots.acquire(session)
        if slot is not None:
            request = {**request, "id_slot": slot}
        chunks: asyncio.Queue[dict[str, Any] | BaseException | None] = asyncio.Queue()

        def on_chunk(chunk: dict[str, Any]) -> bool:
            loop.call_soon_threadsafe(chunks.put_nowait, chunk)
            return cancelled.is_set()  # True tells llama.cpp to stop this request

        def run() -> None:
            with self._active_lock:
                self._active += 1
            try:
                self._server.handle_chat_completions({**request, "stream": True}, on_chunk)
            except BaseException as e:  # surfaced to the consumer, never lost in the thread
                loop.call_soon_threadsafe(chunks.put_nowait, e)
            finally:
                with self._active_lock:
                    self._active -= 1
                loop.call_soon_threadsafe(chunks.put_nowait, None)

        worker = loop.run_in_executor(self._threads, run)
        released = False

        def release(_: Any = None) -> None:
            nonlocal released
            if slot is not None and not released:
                released = True
                self._slots.release(slot)

        # Freed when llama.cpp is done with it, even if this generator is abandoned.
        worker.add_done_callback(release)
        try:
            while (item := await chunks.get()) is not None:
                if isinstance(item, BaseException):
                    raise LLMEngineError(str(item)) from item
                if "error" in item:
                    raise LLMEngineError(str(item["error"]))
                yield item
        finally:
            cancelled.set()
            # The worker returns within one token once cancelled; wait so the slot is free
            # before the next request of this session, without blocking on a cancelled task.
            await asyncio.shield(worker)
            # A finished worker returns at once from that await, before its done callbacks
            # have run: the caller's next request must already find the slot free.
            release()

    async def complete(self, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The whole text of a (non-interactive) completion and llama.cpp's timings of it."""
        parts: list[str] = []
        timings: dict[str, Any] = {}
        async for chunk in self.stream_chat(request, threading.Event()):
            for choice in chunk.get("choices") or []:
                parts.append((choice.get("delta") or {}).get("content") or "")
            timings = chunk.get("timings") or timings
        return "".join(parts), timings

    async def warm_up(self, request: dict[str, Any]) -> dict[int, int]:
        """Put the shared prompt prefix (system prompt, tools) in every slot's KV cache before
        the first user turn; returns the tokens of it each slot then holds.

        A slot that is still empty when a session's request lands on it prefills the whole
        prefix (1.4k tokens, ~8-15 s on 2 cores) in the batch every other session decodes in,
        stalling all of them. Slot 0 prefills it once; the other slots restore it from
        llama.cpp's prompt cache (~40 ms each), which only a request naming no slot consults
        (see `slot_prompt_similarity`): llama.cpp then takes the least recently used slot and
        loads the cached prompt most like the request into it. Slot 0's state reaches the
        cache when a task starts on another slot (idle slots are saved then): a tiny request
        on slot 1 does that, and touching slot 0 again leaves slot 1 to be restored last,
        after the slots never used.
        """
        started = time.monotonic()
        prefix = {**request, "max_tokens": 1}
        await self.complete({**prefix, "id_slot": 0})
        prefilled = time.monotonic() - started
        if self.parallel_slots > 1:
            await self.complete({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "id_slot": 1})
            await self.complete({**prefix, "id_slot": 0})
            for _ in range(1, self.parallel_slots):
                await self.complete(prefix)
        held = {}
        for slot in range(1, self.parallel_slots):
            _, timings = await self.complete({**prefix, "id_slot": slot})
            held[slot] = timings.get("cache_n", 0)
        logger.info(
            f"LLM {self.model_name} warmed up: slot 0 prefilled in {prefilled:.1f}s, other"
            f" slots' cached prefix tokens {held}, {time.monotonic() - started:.1f}s in all"
        )
        return held
