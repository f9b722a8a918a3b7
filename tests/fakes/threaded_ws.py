"""A WebSocket fake that runs on its own event loop in a background thread, so a test that
blocks its own loop never stalls the server under test's connections to it."""

from __future__ import annotations

import asyncio
import threading

from websockets.asyncio.server import ServerConnection, serve


class ThreadedWebSocketFake:
    """Subclasses implement `_handle(ws)` and `_check_request(connection, request)`.

    Use as a context manager (or `start()` / `stop()`); `url` is `ws://127.0.0.1:PORT`.
    """

    name = "fake"

    def __init__(self, *, api_key: str = "test-key"):
        self.api_key = api_key
        self.connections: list = []
        self.rejected: list[tuple[str, int]] = []  # (path, HTTP status) of refused handshakes
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=self.name, daemon=True)
        self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self):
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            await asyncio.wait_for(self._server.wait_closed(), 5)

        if self._server is not None:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _serve(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._check_request, max_size=None)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"

    async def _handle(self, ws: ServerConnection) -> None:
        raise NotImplementedError

    def _check_request(self, connection: ServerConnection, request):
        raise NotImplementedError
