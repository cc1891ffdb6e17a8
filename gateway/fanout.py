"""Fan-out routes (the `fanout_services` method option): one HTTP list call answered by several
services, each listing its own records, merged newest first into one page.

Shape required (checked at start-up): the request has `page_size` and `page_token`; the response has
one repeated message field (the items) and `next_page_token`; each item has a Timestamp (the first
one declared is the sort key) and `page_token_after`, the service's token continuing right after it.

Paging is exact: the gateway's page token is a cursor per service (base64url JSON; null = that
service is exhausted). Every service is asked for `page_size` items after its cursor, the answers are
merged by (timestamp, service, position) newest first and cut to `page_size`, and each service's
cursor moves to the `page_token_after` of its last item taken. A service whose items were all taken
and that said it had no more is exhausted. Any failing service fails the whole call: an audit page
that silently lacks a service would look complete when it is not.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import heapq
import json
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.errors import bad_request
from gateway.routes import Route, RouteConfigError

DEFAULT_PAGE_SIZE = 50
TIMESTAMP = "google.protobuf.Timestamp"


def _items_field(response: Descriptor) -> FieldDescriptor | None:
    repeated = [f for f in response.fields if f.is_repeated and f.message_type is not None]
    return repeated[0] if len(repeated) == 1 else None


def _sort_field(item: Descriptor) -> FieldDescriptor | None:
    return next(
        (f for f in item.fields if f.message_type is not None and f.message_type.full_name == TIMESTAMP), None
    )


def check_fanout_shape(route: Route) -> None:
    request, response = route.method.input_type, route.method.output_type
    items = _items_field(response)
    problems = []
    if "page_size" not in request.fields_by_name or "page_token" not in request.fields_by_name:
        problems.append("request lacks page_size/page_token")
    if "next_page_token" not in response.fields_by_name or items is None:
        problems.append("response needs one repeated item field and next_page_token")
    elif (
        "page_token_after" not in items.message_type.fields_by_name or _sort_field(items.message_type) is None
    ):
        problems.append("items need a Timestamp and page_token_after")
    if problems:
        raise RouteConfigError(f"{route.method.full_name}: fan-out needs a list shape: {'; '.join(problems)}")


def decode_token(token: str, services: Sequence[str]) -> dict[str, str | None]:
    if not token:
        return dict.fromkeys(services, "")
    try:
        cursors = json.loads(base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[..."
        cursors = None
    if not isinstance(cursors, dict) or set(cursors) != set(services):
        raise bad_request("page_token is not a token this API issued", field="page_token")
    if not all(value is None or isinstance(value, str) for value in cursors.values()):
        raise bad_request("page_token is not a token this API issued", field="page_token")
    return cursors


def encode_token(cursors: dict[str, str | None]) -> str:
    if all(value is None for value in cursors.values()):
        return ""
    return base64.urlsafe_b64encode(json.dumps(cursors, sort_keys=True).encode()).decode().rstrip("=")


class FanoutCall:
    def __init__(
        self, route: Route, calls: dict[str, grpc.aio.UnaryUnaryMultiCallable], timeout: float
    ) -> None:
        check_fanout_shape(route)
        self._route = route
        self._calls = calls
        self._timeout = timeout
        self._items = _items_field(route.method.output_type)
        assert self._items is not None
        self._sort = _sort_field(self._items.message_type)

    async def __call__(self, request: Message, metadata: Sequence[tuple[str, str]]) -> Message:
        services = sorted(self._calls)
        cursors = decode_token(request.page_token, services)
        size = request.page_size or DEFAULT_PAGE_SIZE
        active = [name for name in services if cursors[name] is not None]
        replies = await asyncio.gather(
            *(self._ask(name, request, cursors[name] or "", size, metadata) for name in active)
        )
        answers = dict(zip(active, replies, strict=True))
        merged = heapq.nsmallest(size, self._keyed(answers), key=lambda entry: entry[0])
        taken: dict[str, list[Message]] = {name: [] for name in active}
        for _, name, item in merged:
            taken[name].append(item)
        for name, reply in answers.items():
            items = getattr(reply, self._items.name)
            if taken[name]:
                cursors[name] = taken[name][-1].page_token_after
            if len(taken[name]) == len(items) and not reply.next_page_token:
                cursors[name] = None
        response = self._route.response_class()
        getattr(response, self._items.name).extend(item for _, _, item in merged)
        response.next_page_token = encode_token(cursors)
        return response

    def _keyed(self, answers: dict[str, Message]) -> list[tuple[tuple[Any, ...], str, Message]]:
        entries = []
        for name, reply in answers.items():
            for position, item in enumerate(getattr(reply, self._items.name)):
                stamp = getattr(item, self._sort.name)  # type: ignore[union-attr]
                # newest first; ties keep each service's own order, services in name order
                entries.append(((-stamp.seconds, -stamp.nanos, name, position), name, item))
        return entries

    async def _ask(
        self, name: str, request: Message, cursor: str, size: int, metadata: Sequence[tuple[str, str]]
    ) -> Message:
        part = type(request)()
        part.CopyFrom(request)
        part.page_token = cursor
        part.page_size = size
        return await self._calls[name](part, metadata=metadata, timeout=self._timeout)
