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
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import xllamacpp
from loguru import logger


class LLMEngineError(RuntimeError):
    """The engine answered a request with an error."""


class LocalLLMEngine:
    def __init__(
        self,
        model_path: Path,
        *,
        threads: int = 2,
        context_tokens_per_slot: int = 2048,
        parallel_slots: int = 4,
    ):
        params = xllamacpp.CommonParams()
        params.model.path = str(model_path)
        params.n_parallel = parallel_slots
        params.n_ctx = context_tokens_per_slot * parallel_slots
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.verbosity = -1
        self.context_tokens_per_slot = context_tokens_per_slot
        self.model_name = model_path.name
        self._server = xllamacpp.Server(params)
        # Each request holds a thread for its whole generation: give them their own pool so
        # they never starve the STT/TTS work in the loop's default executor. Requests beyond
        # the slot count queue inside llama.cpp.
        self._threads = ThreadPoolExecutor(parallel_slots * 2, thread_name_prefix="llm")
        self._active = 0
        self._active_lock = threading.Lock()

    @property
    def active_requests(self) -> int:
        return self._active

    async def stream_chat(
        self, request: dict[str, Any], cancelled: threading.Event
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield the OpenAI-style chunks of a streamed chat completion.

        Setting `cancelled` (or cancelling the consuming task) stops decoding at the next token.
        """
        loop = asyncio.get_running_loop()
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

    async def complete(self, request: dict[str, Any]) -> str:
        """The whole text of a (non-interactive) completion, e.g. for warm-up."""
        parts = []
        async for chunk in self.stream_chat(request, threading.Event()):
            for choice in chunk.get("choices") or []:
                parts.append((choice.get("delta") or {}).get("content") or "")
        return "".join(parts)

    async def warm_up(self, request: dict[str, Any]) -> None:
        """Decode once so the shared prompt prefix is cached before the first user turn."""
        await self.complete({**request, "max_tokens": 1})
        logger.info(f"LLM {self.model_name} warmed up")
