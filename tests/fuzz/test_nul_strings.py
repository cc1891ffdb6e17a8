"""No string with a NUL character gets past the interceptor (PostgreSQL text cannot hold one)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2
from shop.inventory.v1 import inventory_pb2 as pb
from shop.inventory.v1 import inventory_pb2_grpc
from shop.order.v1 import order_pb2

from meshkit.errors import error_info_of
from meshkit.interceptors import nul_field
from tests.harness import Mesh
from tests.integration.inventory_helpers import new_product_id


def test_nul_field_finds_top_level_nested_repeated_and_map_values() -> None:
    assert nul_field(pb.AdjustStockRequest(product_id=1, reason="ok")) == ""
    assert nul_field(pb.AdjustStockRequest(reason="a\x00b")) == "reason"
    checkout = order_pb2.CheckoutRequest(idempotency_key="k")
    checkout.shipping_address.city = "Lon\x00don"
    assert nul_field(checkout) == "shipping_address.city"
    assert nul_field(pb.BatchGetReservationsRequest(reservation_ids=["x", "\x00"])) == "reservation_ids"
    nested = struct_pb2.Struct()
    nested.update({"outer": {"inner": "v\x00"}})
    assert nul_field(nested).startswith("fields")


async def test_a_nul_in_any_string_is_invalid_argument_over_grpc(fuzz_mesh: Mesh) -> None:
    stub = inventory_pb2_grpc.InventoryServiceStub(
        fuzz_mesh.channel("inventory_svc", "fuzz-admin", ("admin",))
    )
    product = new_product_id()
    await stub.ReceiveStock(pb.ReceiveStockRequest(product_id=product, warehouse_id=1, quantity=5))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AdjustStock(
            pb.AdjustStockRequest(product_id=product, warehouse_id=1, delta=1, reason="x\x00y")
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert error_info_of(caught.value) is not None
