"""Fan-out merging: pages over several services' lists are exact (every item once, newest first)."""

from __future__ import annotations

import base64
import random

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, timestamp_pb2
from google.protobuf.message_factory import GetMessageClass

from gateway.errors import GatewayError
from gateway.fanout import FanoutCall, decode_token
from gateway.pathtemplate import parse_template
from gateway.routes import Route, RouteConfigError

F = descriptor_pb2.FieldDescriptorProto


def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    ts = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(ts)
    pool.Add(ts)
    proto = descriptor_pb2.FileDescriptorProto(
        name="test/things.proto",
        package="test.v1",
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"],
    )
    thing = proto.message_type.add(name="Thing")
    thing.field.add(name="id", number=1, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL, json_name="id")
    thing.field.add(
        name="create_time",
        number=2,
        type=F.TYPE_MESSAGE,
        type_name=".google.protobuf.Timestamp",
        label=F.LABEL_OPTIONAL,
        json_name="createTime",
    )
    thing.field.add(
        name="page_token_after",
        number=3,
        type=F.TYPE_STRING,
        label=F.LABEL_OPTIONAL,
        json_name="pageTokenAfter",
    )
    request = proto.message_type.add(name="ListThingsRequest")
    request.field.add(
        name="page_size", number=1, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL, json_name="pageSize"
    )
    request.field.add(
        name="page_token", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, json_name="pageToken"
    )
    response = proto.message_type.add(name="ListThingsResponse")
    response.field.add(
        name="things",
        number=1,
        type=F.TYPE_MESSAGE,
        type_name=".test.v1.Thing",
        label=F.LABEL_REPEATED,
        json_name="things",
    )
    response.field.add(
        name="next_page_token",
        number=2,
        type=F.TYPE_STRING,
        label=F.LABEL_OPTIONAL,
        json_name="nextPageToken",
    )
    bad = proto.message_type.add(name="NotAList")
    bad.field.add(name="id", number=1, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL, json_name="id")
    service = proto.service.add(name="ThingService")
    service.method.add(
        name="ListThings", input_type=".test.v1.ListThingsRequest", output_type=".test.v1.ListThingsResponse"
    )
    service.method.add(name="Bad", input_type=".test.v1.NotAList", output_type=".test.v1.NotAList")
    pool.Add(proto)
    return pool


POOL = _pool()
SERVICE = POOL.FindServiceByName("test.v1.ThingService")
Request = GetMessageClass(POOL.FindMessageTypeByName("test.v1.ListThingsRequest"))
Response = GetMessageClass(POOL.FindMessageTypeByName("test.v1.ListThingsResponse"))
Thing = GetMessageClass(POOL.FindMessageTypeByName("test.v1.Thing"))


def route(method: str = "ListThings") -> Route:
    return Route(
        http_method="GET",
        path=parse_template("/v1/things"),
        body="",
        response_body="",
        method=SERVICE.methods_by_name[method],
        access=3,
        rate_limit_class="admin",
        success_status=200,
        header_bindings=(),
        fanout_services=("a", "b", "c"),
    )


class FakeList:
    """One service's list, newest first, paged like meshkit's audit servicer (token = position)."""

    def __init__(self, name: str, stamps: list[int]) -> None:
        self.things = [
            Thing(id=i, page_token_after=f"{name}:{n + 1}")
            for n, i in enumerate(sorted(stamps, reverse=True))
        ]
        for thing in self.things:
            thing.create_time.seconds = thing.id
        self.name = name
        self.fail = False

    async def __call__(self, request, *, metadata, timeout):
        if self.fail:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
            )
        start = int(request.page_token.split(":")[1]) if request.page_token else 0
        page = self.things[start : start + request.page_size]
        more = start + request.page_size < len(self.things)
        return Response(things=page, next_page_token=page[-1].page_token_after if more and page else "")


async def collect(fanout: FanoutCall, page_size: int) -> list[list[int]]:
    pages, token = [], ""
    while True:
        reply = await fanout(Request(page_size=page_size, page_token=token), metadata=())
        pages.append([thing.id for thing in reply.things])
        token = reply.next_page_token
        if not token:
            return pages
        assert len(pages) < 100


@pytest.mark.parametrize("page_size", [1, 2, 3, 7, 50])
async def test_paging_is_exact_and_newest_first(page_size: int) -> None:
    rng = random.Random(page_size)
    stamps = rng.sample(range(1, 10_000), 40)
    lists = {
        "a": FakeList("a", stamps[:25]),
        "b": FakeList("b", stamps[25:31]),
        "c": FakeList("c", stamps[31:]),
    }
    pages = await collect(FanoutCall(route(), lists, timeout=1.0), page_size)
    flat = [thing for page in pages for thing in page]
    assert flat == sorted(stamps, reverse=True)
    assert all(len(page) == page_size for page in pages[:-1])


async def test_empty_services_and_empty_result() -> None:
    lists = {"a": FakeList("a", []), "b": FakeList("b", []), "c": FakeList("c", [5])}
    assert await collect(FanoutCall(route(), lists, timeout=1.0), 10) == [[5]]
    lists = {"a": FakeList("a", []), "b": FakeList("b", []), "c": FakeList("c", [])}
    assert await collect(FanoutCall(route(), lists, timeout=1.0), 10) == [[]]


async def test_one_failing_service_fails_the_call() -> None:
    lists = {"a": FakeList("a", [1]), "b": FakeList("b", [2]), "c": FakeList("c", [3])}
    lists["b"].fail = True
    with pytest.raises(grpc.aio.AioRpcError):
        await FanoutCall(route(), lists, timeout=1.0)(Request(page_size=5), metadata=())


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        "eyJhIjogMX0",
        "e30",
        base64.urlsafe_b64encode(b"[" * 3000).decode(),  # nested past the parser's recursion limit: a 500
    ],
)
def test_foreign_tokens_are_400(token: str) -> None:
    with pytest.raises(GatewayError) as caught:
        decode_token(token, ["a", "b", "c"])
    assert caught.value.http_status == 400


def test_non_list_methods_cannot_fan_out() -> None:
    with pytest.raises(RouteConfigError):
        FanoutCall(route("Bad"), {}, timeout=1.0)
