"""A TCP proxy that can be paused (a blackhole: connections stay open, bytes stop flowing), run in its own thread.

Used to make keep-alives hang without closing connections, the way a partition or a stalled server looks to a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from coord.testing import free_port


class PausableProxy:
    """Forwards 127.0.0.1:``port`` to ``target`` ("host:port").

    ``pause()`` holds every byte (connections stay open); ``resume()`` releases them. ``cut()`` closes every
    connection and refuses new ones until ``restore()``.
    """

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.port = free_port()
        self._flowing: asyncio.Event | None = None
        self._refusing = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="pausable-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._flowing = asyncio.Event()
        self._flowing.set()
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            with contextlib.suppress(BaseException):
                self._loop.run_until_complete(asyncio.sleep(0.05))
            self._loop.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            client_writer.close()
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        self._writers.update((client_writer, server_writer))
        await asyncio.gather(self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer))

    def pause(self) -> None:
        assert self._flowing is not None
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def resume(self) -> None:
        assert self._flowing is not None
        self._loop.call_soon_threadsafe(self._flowing.set)

    def _cut(self) -> None:
        self._refusing = True
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    def cut(self) -> None:
        done = threading.Event()
        self._loop.call_soon_threadsafe(lambda: (self._cut(), done.set()))
        done.wait(5)

    def restore(self) -> None:
        self._loop.call_soon_threadsafe(setattr, self, "_refusing", False)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
