"""A pipelined RESP2 connection for the hottest Valkey calls (catalog's GetProduct cache hit, the
cart-cache invalidation script, the gateway's rate-limit script).

valkey-py spends about 60 µs of CPU per command in Python (pool checkout, retry wrapper, stream
reader, line-by-line parser) against about 12 µs for the round trip itself. Here every caller
writes its command on one shared connection and waits on a future; replies arrive in command order
and `data_received` parses all complete ones out of one buffer, so one read can finish many calls.
It carries reads and scripts whose effect may safely be lost or applied without an answer (a
lost connection fails the call even when the server ran the command): a cache invalidation that is
idempotent, a token-bucket step that fails open. Other writes, MULTI and pipelines stay on valkey-py.

Failure model: a refused or lost connection fails every waiting call with ConnectionError (an
OSError) and the next call reconnects. A caller that gives up (timeout, cancellation) leaves its
reply to be skipped when it arrives; if the oldest unanswered command is older than
`stall_seconds` the connection is dropped, so a server that stopped answering cannot hold it.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from valkey.exceptions import ResponseError

Reply = bytes | int | list[Any] | None


class _Incomplete(Exception):
    """The buffer ends inside a reply: wait for more bytes."""


def encode_command(args: tuple[bytes | str | int, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def parse_reply(buffer: bytes | bytearray, pos: int) -> tuple[Reply | ResponseError, int]:
    """One RESP2 reply starting at `pos`: (value, position after it); _Incomplete if cut short."""
    end = buffer.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind = buffer[pos]
    line = bytes(buffer[pos + 1 : end])
    pos = end + 2
    if kind == 36:  # $ bulk string
        size = int(line)
        if size < 0:
            return None, pos
        if len(buffer) < pos + size + 2:
            raise _Incomplete
        return bytes(buffer[pos : pos + size]), pos + size + 2
    if kind == 42:  # * array
        count = int(line)
        if count < 0:
            return None, pos
        items = []
        for _ in range(count):
            item, pos = parse_reply(buffer, pos)
            items.append(item)
        return items, pos
    if kind == 58:  # : integer
        return int(line), pos
    if kind == 43:  # + simple string
        return line, pos
    if kind == 45:  # - error
        return ResponseError(line.decode(errors="replace")), pos
    raise ConnectionError(f"unexpected RESP reply type {chr(kind)!r}")


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[tuple[asyncio.Future[Reply], float]] = collections.deque()
        self._buffer = bytearray()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        pos = 0
        try:
            while pos < len(buffer):
                value, pos = parse_reply(buffer, pos)
                future, _ = self.waiting.popleft()
                if future.done():  # its caller gave up
                    continue
                if isinstance(value, ResponseError):
                    future.set_exception(value)
                else:
                    future.set_result(value)
        except _Incomplete:
            pass
        except (ConnectionError, ValueError, IndexError) as exc:  # garbage or a reply nobody sent
            del buffer[:]
            self._fail(ConnectionError(f"bad reply from valkey: {exc!r}"))
            if self.transport is not None:
                self.transport.abort()
            return
        del buffer[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"valkey connection lost: {exc!r}"))

    def _fail(self, error: Exception) -> None:
        self.lost = True
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)


class PipelinedReader:
    """Lazily connected; `command()` is safe to call from many tasks at once."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 0.5,
        stall_seconds: float = 2.0,
    ) -> None:
        self._address = (host, port)
        self._hello: list[tuple[bytes | str | int, ...]] = []
        if password:
            self._hello.append(("AUTH", username, password) if username else ("AUTH", password))
        if db:
            self._hello.append(("SELECT", db))
        self._connect_timeout = connect_timeout
        self._stall = stall_seconds
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def command(self, *args: bytes | str | int) -> Reply:
        protocol = self._protocol
        if protocol is None or protocol.lost or self._stalled(protocol):
            protocol = await self._connect()
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        protocol.waiting.append((future, time.monotonic()))
        protocol.transport.write(encode_command(args))  # type: ignore[union-attr]
        return await future

    async def pipeline(self, commands: list[tuple[bytes | str | int, ...]]) -> list[Reply]:
        """Several commands in one write; their replies in order. An error reply raises."""
        protocol = self._protocol
        if protocol is None or protocol.lost or self._stalled(protocol):
            protocol = await self._connect()
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        futures: list[asyncio.Future[Reply]] = []
        for _ in commands:
            future: asyncio.Future[Reply] = loop.create_future()
            protocol.waiting.append((future, now))
            futures.append(future)
        protocol.transport.write(b"".join(encode_command(c) for c in commands))  # type: ignore[union-attr]
        try:
            return [await future for future in futures]
        finally:
            for future in futures:  # if one failed or the caller gave up, the rest are skipped
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()  # retrieved: no "never retrieved" warning for the rest

    def _stalled(self, protocol: _Protocol) -> bool:
        if protocol.waiting and time.monotonic() - protocol.waiting[0][1] > self._stall:
            protocol.transport.abort()  # type: ignore[union-attr]  # fails the waiting calls
            return True
        return False

    async def _connect(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            current = self._protocol
            if current is not None and not current.lost and not self._stalled(current):
                return current  # another caller reconnected while this one waited
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(self._connect_timeout):
                _, protocol = await loop.create_connection(_Protocol, *self._address)
            for hello in self._hello:
                future: asyncio.Future[Reply] = loop.create_future()
                protocol.waiting.append((future, time.monotonic()))
                protocol.transport.write(encode_command(hello))  # type: ignore[union-attr]
            try:
                async with asyncio.timeout(self._connect_timeout):
                    for future, _ in list(protocol.waiting):
                        await future
            except BaseException:
                protocol.transport.abort()  # type: ignore[union-attr]
                raise
            self._protocol = protocol
            return protocol

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None

    @classmethod
    def for_client(cls, client: Any) -> PipelinedReader | None:
        """A reader on the same server, database and credentials as a valkey-py client; None when
        that client uses TLS or a Unix socket (those stay on valkey-py)."""
        from valkey.asyncio.connection import Connection

        pool = client.connection_pool
        if pool.connection_class is not Connection:
            return None
        kwargs = pool.connection_kwargs
        return cls(
            host=kwargs.get("host") or "localhost",
            port=int(kwargs.get("port") or 6379),
            db=int(kwargs.get("db") or 0),
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            connect_timeout=kwargs.get("socket_connect_timeout") or 0.5,
        )
