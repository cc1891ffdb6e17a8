"""uvicorn's httptools protocol with bounds on the request head: the request target (414 URI Too
Long beyond MAX_URL_BYTES) and the whole head, request line and headers (431 Request Header Fields
Too Large beyond MAX_HEAD_BYTES).

httptools.parse_url keeps offsets and lengths in 16 bits, so uvicorn passed a query string over
64 KiB on truncated to its length modulo 65536: a 1 MB `?q=` reached the search as an empty query
(200 with everything) instead of being refused. The whole target is checked while it arrives.

Neither httptools nor uvicorn bounds the headers: a client could send one header of hundreds of
megabytes (httptools grows it chunk by chunk, in quadratic time) or any number of them. The bytes
received while a head is incomplete are counted per read: a read that starts and ends inside one
head counts whole, one in which a head completes (it also holds a body or other requests) or that
starts after the end of a pipelined request does not, so a head can exceed the bound by at most one
read before it is refused.
"""

from __future__ import annotations

import json

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_URL_BYTES = 16 * 1024
MAX_HEAD_BYTES = 64 * 1024


def _error(code: int, reason: bytes, message: str) -> bytes:
    body = json.dumps(
        {"error": {"code": code, "status": "INVALID_ARGUMENT", "message": message, "details": []}}
    ).encode()
    return (
        b"HTTP/1.1 " + str(code).encode() + b" " + reason + b"\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )


_URL_TOO_LONG = _error(414, b"URI Too Long", f"request target longer than {MAX_URL_BYTES} bytes")
_HEAD_TOO_LARGE = _error(
    431, b"Request Header Fields Too Large", f"request line and headers longer than {MAX_HEAD_BYTES} bytes"
)


class UrlTooLong(httptools.HttpParserError):
    pass


LINGER_SECONDS = 2.0


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _in_head = True  # waiting for (or reading) a request's head
    _head_bytes = 0
    _head_completed = False  # during the current read
    _refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the rest of a refused request: read and dropped until the client closes
        was_in_head = self._in_head
        self._head_completed = False
        super().data_received(data)
        # count a read only if it started and ended inside one head: a read in which a head was
        # completed holds a body or other requests too (and a request already handed to the app)
        if self._refused or self._head_completed or not (was_in_head and self._in_head):
            return
        if self.transport.is_closing():
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(_HEAD_TOO_LARGE)

    def _refuse(self, response: bytes) -> None:
        """Answer, then close gently: a close with the client's bytes still unread makes the kernel
        send a reset, which can destroy the answer before the client reads it. So: send it, end our
        side (the client sees the answer, then EOF), drop whatever else arrives, and close for good
        after LINGER_SECONDS. With an earlier pipelined request still being answered, the connection
        is closed without an answer instead (as uvicorn does), so nothing overtakes that response."""
        self._refused = True
        cycle = getattr(self, "cycle", None)
        if cycle is not None and not cycle.response_complete:
            self.transport.close()
            return
        self.transport.write(response)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url_too_long = False
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_URL_BYTES:
            self._url_too_long = True
            raise UrlTooLong("request target too long")  # ends parsing; uvicorn answers via send_400

    def on_headers_complete(self) -> None:
        self._in_head, self._head_completed = False, True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if not getattr(self, "_url_too_long", False):
            super().send_400_response(msg)
            return
        self._refuse(_URL_TOO_LONG)
