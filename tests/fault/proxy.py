"""A TCP proxy that adds latency: every chunk is forwarded `delay` seconds after it arrived.

Latency, not a bandwidth cap: chunks are queued with their arrival time and each direction's writer
sends a chunk once its time has come, so many calls multiplexed on one HTTP/2 connection are all
late by `delay`, not by `delay` times their number. Changing `delay` affects chunks arriving after.
"""

from __future__ import annotations

import asyncio
import contextlib
import time


class LatencyProxy:
    def __init__(self, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target_port = target_port
        self.host = host
        self.delay = 0.0
        self.port = 0
        self.delayed_chunks = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.close()
            return
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
                self._tasks.discard(task)
            for stream in (writer, up_writer):
                stream.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    self.delayed_chunks += 1
                    await asyncio.sleep(wait)
                dst.write(data)
                await dst.drain()

        sender = asyncio.create_task(send())
        try:
            while data := await src.read(65536):
                queue.put_nowait((time.monotonic() + self.delay, data))
                if sender.done():
                    break
            while not queue.empty() and not sender.done():  # flush what is left, then close
                await asyncio.sleep(0.01)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                await sender
