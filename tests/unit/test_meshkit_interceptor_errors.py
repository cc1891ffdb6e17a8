"""What a failing handler's caller learns through MeshServerInterceptor, on a real in-process
grpc.aio server: a lost database is UNAVAILABLE naming no host, port or role; a bug is INTERNAL."""

from __future__ import annotations

import grpc
import psycopg
import pytest
from shop.inventory.v1 import inventory_pb2 as pb
from shop.inventory.v1 import inventory_pb2_grpc

from meshkit.auth import INTERNAL_TOKEN_HEADER, mint_internal_token
from meshkit.context import Principal
from meshkit.interceptors import MeshServerInterceptor

SECRET = "interceptor-test-secret-0123456789abcdef"
LEAKY = 'connection to server at "10.1.2.3", port 5432 failed: FATAL: password authentication failed for user "inventory"'


class Failing(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def GetStock(self, request, context):
        raise self.error


@pytest.mark.parametrize(
    ("error", "code", "details"),
    [
        (
            psycopg.OperationalError(LEAKY),
            grpc.StatusCode.UNAVAILABLE,
            "database unavailable: OperationalError",
        ),
        (RuntimeError(LEAKY), grpc.StatusCode.INTERNAL, "internal error"),
    ],
)
async def test_the_caller_learns_the_kind_of_failure_not_its_text(error, code, details) -> None:
    server = grpc.aio.server(interceptors=[MeshServerInterceptor(internal_token_secret=SECRET)])
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(Failing(error), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            token = mint_internal_token(SECRET, Principal("order_svc", ("service",)))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await inventory_pb2_grpc.InventoryServiceStub(channel).GetStock(
                    pb.GetStockRequest(product_id=1), metadata=[(INTERNAL_TOKEN_HEADER, token)], timeout=5
                )
    finally:
        await server.stop(None)
    assert (caught.value.code(), caught.value.details()) == (code, details)
    assert "10.1.2.3" not in str(caught.value.debug_error_string())


async def test_a_streaming_method_is_not_served_past_the_guard() -> None:
    """The token and access checks wrap unary methods; a streaming one would have been served to
    anyone, so the interceptor refuses it (UNIMPLEMENTED) even with no token at all."""

    async def watch(request: bytes, context):
        yield b"secret"

    handler = grpc.method_handlers_generic_handler(
        "test.v1.Leaky", {"Watch": grpc.unary_stream_rpc_method_handler(watch)}
    )
    server = grpc.aio.server(interceptors=[MeshServerInterceptor(internal_token_secret=SECRET)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_stream("/test.v1.Leaky/Watch")(b"", timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in call:
                    pass
    finally:
        await server.stop(None)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
