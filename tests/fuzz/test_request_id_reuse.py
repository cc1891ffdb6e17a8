"""A request_id names one request (AIP-155): replaying it is harmless, reusing it for another is refused.

Found by the stateful fuzzer: the same requestId on stock adjustments of two products silently did
nothing to the second and answered NOT_FOUND (or its unchanged stock), as if it had been applied.
"""

from __future__ import annotations

import uuid

import grpc
import pytest
from shop.inventory.v1 import inventory_pb2 as pb
from shop.inventory.v1 import inventory_pb2_grpc

from meshkit.errors import error_info_of
from tests.harness import Mesh
from tests.integration.inventory_helpers import new_product_id


async def test_a_reused_request_id_with_other_parameters_is_refused_and_a_replay_is_not(
    fuzz_mesh: Mesh,
) -> None:
    stub = inventory_pb2_grpc.InventoryServiceStub(
        fuzz_mesh.channel("inventory_svc", "fuzz-admin", ("admin",))
    )
    first, second, request_id = new_product_id(), new_product_id(), str(uuid.uuid4())
    await stub.ReceiveStock(pb.ReceiveStockRequest(product_id=first, warehouse_id=1, quantity=5))
    await stub.ReceiveStock(pb.ReceiveStockRequest(product_id=second, warehouse_id=1, quantity=5))
    adjust = pb.AdjustStockRequest(product_id=first, warehouse_id=1, delta=3, request_id=request_id)

    once = await stub.AdjustStock(adjust)
    again = await stub.AdjustStock(adjust)
    assert once.stock.quantity == again.stock.quantity == 8

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AdjustStock(
            pb.AdjustStockRequest(product_id=second, warehouse_id=1, delta=3, request_id=request_id)
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info_of(caught.value)
    assert info is not None and info.reason == "REQUEST_ID_REUSED"
    stock = await stub.GetStock(pb.GetStockRequest(product_id=second))
    assert stock.stock.quantity == 5
