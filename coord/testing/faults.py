"""A TCP fault proxy for tests: put it in front of a server's port and make the link misbehave.

Modes (switch at any time, from any thread):

- ``heal()``: bytes flow both ways;
- ``blackhole()``: connections stay open but every byte is dropped, both ways (a partition as TCP sees it);
- ``delay(seconds)``: bytes flow, each chunk held back for ``seconds`` (order kept);
- ``cut()``: every connection is closed and new ones are refused until ``heal()`` (a crashed peer or a reset).

The proxy runs its own event loop in a daemon thread and listens on 127.0.0.1 only. ``close()`` stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from types import TracebackType

from coord.testing.ports import free_port

__all__ = ["FaultProxy"]

_CHUNK = 65536


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to ``target_port`` on 127.0.0.1, with switchable faults."""

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self._mode = "heal"
        self._delay = 0.0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"fault-proxy-{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"fault proxy did not start: {self._error}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mode(self) -> str:
        return self._mode

    def heal(self) -> None:
        self._mode = "heal"

    def blackhole(self) -> None:
        self._mode = "blackhole"

    def delay(self, seconds: float) -> None:
        self._delay = seconds
        self._mode = "delay"

    def cut(self) -> None:
        self._mode = "cut"
        self._loop.call_soon_threadsafe(self._close_all)

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self._shutdown)
        self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the proxy's own thread ---------------------------------------------------------------------------------------

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    def _shutdown(self) -> None:
        self._close_all()
        if self._server is not None:
            self._server.close()
        self._loop.call_later(0.05, self._loop.stop)

    def _close_all(self) -> None:
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._mode == "cut":
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)
        for w in (writer, up_writer):
            self._writers.discard(w)
            with contextlib.suppress(Exception):
                w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                break
            mode = self._mode
            if mode == "blackhole":
                continue
            if mode == "cut":
                break
            if mode == "delay":
                release_at = time.monotonic() + self._delay
                await asyncio.sleep(max(0.0, release_at - time.monotonic()))
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(Exception):
            writer.transport.abort()
