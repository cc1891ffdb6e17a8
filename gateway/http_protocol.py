"""uvicorn's httptools protocol with a bound on the request target (414 URI Too Long beyond it).

httptools.parse_url keeps offsets and lengths in 16 bits, so uvicorn passed a query string over
64 KiB on truncated to its length modulo 65536: a 1 MB `?q=` reached the search as an empty query
(200 with everything) instead of being refused. The whole target is checked while it arrives.
"""

from __future__ import annotations

import json

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_URL_BYTES = 16 * 1024
_BODY = json.dumps(
    {
        "error": {
            "code": 414,
            "status": "INVALID_ARGUMENT",
            "message": f"request target longer than {MAX_URL_BYTES} bytes",
            "details": [],
        }
    }
).encode()


class UrlTooLong(httptools.HttpParserError):
    pass


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url_too_long = False

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_URL_BYTES:
            self._url_too_long = True
            raise UrlTooLong("request target too long")  # ends parsing; uvicorn answers via send_400

    def send_400_response(self, msg: str) -> None:
        if not getattr(self, "_url_too_long", False):
            super().send_400_response(msg)
            return
        head = (
            b"HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(_BODY)).encode() + b"\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head + _BODY)
        self.transport.close()
