"""InventoryService servicer: proto <-> model translation only."""

from __future__ import annotations

import datetime as dt

import grpc
from google.protobuf import timestamp_pb2
from shop.inventory.v1 import inventory_pb2 as pb
from shop.inventory.v1 import inventory_pb2_grpc

from inventory_svc.jobs import release_expired_reservations
from inventory_svc.model import Movement, ProductStock, Reservation, ReservationStatus
from inventory_svc.service import InventoryService
from meshkit.errors import InvalidArgument

_STATUS = {
    ReservationStatus.ACTIVE: pb.RESERVATION_STATUS_ACTIVE,
    ReservationStatus.COMMITTED: pb.RESERVATION_STATUS_COMMITTED,
    ReservationStatus.RELEASED: pb.RESERVATION_STATUS_RELEASED,
    ReservationStatus.EXPIRED: pb.RESERVATION_STATUS_EXPIRED,
}


def _ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _ttl(request: pb.ReserveStockRequest | pb.ExtendReservationsRequest) -> dt.timedelta | None:
    if not request.HasField("ttl"):
        return None
    try:
        return request.ttl.ToTimedelta()
    except (OverflowError, ValueError):  # beyond what a timedelta holds, so far beyond MAX_TTL
        raise InvalidArgument("ttl", "out of range") from None


def reservation_pb(r: Reservation) -> pb.Reservation:
    return pb.Reservation(
        id=str(r.id),
        owner=r.owner,
        product_id=r.product_id,
        warehouse_id=r.warehouse_id,
        quantity=r.quantity,
        status=_STATUS[r.status],
        expires_at=_ts(r.expires_at),
        order_id=r.order_id,
    )


def stock_pb(s: ProductStock) -> pb.ProductStock:
    warehouses = [
        pb.WarehouseStock(
            warehouse_id=w.warehouse_id, quantity=w.quantity, reserved=w.reserved, available=w.available
        )
        for w in s.warehouses
    ]
    return pb.ProductStock(
        product_id=s.product_id,
        warehouses=warehouses,
        quantity=sum(w.quantity for w in s.warehouses),
        reserved=sum(w.reserved for w in s.warehouses),
        available=s.available,
        in_stock=s.available > 0,
    )


class InventoryServicer(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self, service: InventoryService, *, expiry_batch_size: int) -> None:
        self._service = service
        self._expiry_batch_size = expiry_batch_size

    async def GetStock(
        self, request: pb.GetStockRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStockResponse:
        return pb.GetStockResponse(stock=stock_pb(await self._service.get_stock(request.product_id)))

    async def AdjustStock(
        self, request: pb.AdjustStockRequest, context: grpc.aio.ServicerContext
    ) -> pb.AdjustStockResponse:
        stock = await self._service.change_stock(
            product_id=request.product_id,
            warehouse_id=request.warehouse_id,
            delta=request.delta,
            movement=Movement.ADJUST,
            reason=request.reason,
            request_id=request.request_id,
        )
        return pb.AdjustStockResponse(stock=stock_pb(stock))

    async def ReceiveStock(
        self, request: pb.ReceiveStockRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReceiveStockResponse:
        stock = await self._service.change_stock(
            product_id=request.product_id,
            warehouse_id=request.warehouse_id,
            delta=request.quantity,
            movement=Movement.RECEIVE,
            reason=request.reference,
            request_id=request.request_id,
        )
        return pb.ReceiveStockResponse(stock=stock_pb(stock))

    async def ReserveStock(
        self, request: pb.ReserveStockRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReserveStockResponse:
        reservations = await self._service.reserve(
            owner=request.owner,
            product_id=request.product_id,
            quantity=request.quantity,
            ttl=_ttl(request),
            request_id=request.request_id,
        )
        return pb.ReserveStockResponse(reservations=[reservation_pb(r) for r in reservations])

    async def ExtendReservations(
        self, request: pb.ExtendReservationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExtendReservationsResponse:
        reservations = await self._service.extend(list(request.reservation_ids), _ttl(request))
        return pb.ExtendReservationsResponse(reservations=[reservation_pb(r) for r in reservations])

    async def ReleaseReservation(
        self, request: pb.ReleaseReservationRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReleaseReservationResponse:
        reservation = await self._service.release(
            request.reservation_id, quantity=request.quantity, request_id=request.request_id
        )
        return pb.ReleaseReservationResponse(reservation=reservation_pb(reservation))

    async def CommitReservations(
        self, request: pb.CommitReservationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommitReservationsResponse:
        reservations, already = await self._service.commit(
            request.order_id, list(request.reservation_ids), dict(request.expected_units)
        )
        return pb.CommitReservationsResponse(
            reservations=[reservation_pb(r) for r in reservations], already_committed=already
        )

    async def RestockOrder(
        self, request: pb.RestockOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.RestockOrderResponse:
        quantity, already = await self._service.restock(request.order_id, reason=request.reason)
        return pb.RestockOrderResponse(quantity_restocked=quantity, already_restocked=already)

    async def BatchGetAvailability(
        self, request: pb.BatchGetAvailabilityRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchGetAvailabilityResponse:
        found = await self._service.availability(list(request.product_ids))
        return pb.BatchGetAvailabilityResponse(
            availabilities=[
                pb.ProductAvailability(product_id=p, available=a, in_stock=a > 0) for p, a in found
            ]
        )

    async def BatchGetReservations(
        self, request: pb.BatchGetReservationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchGetReservationsResponse:
        reservations = await self._service.get_reservations(list(request.reservation_ids))
        return pb.BatchGetReservationsResponse(reservations=[reservation_pb(r) for r in reservations])

    async def ExpireReservations(
        self, request: pb.ExpireReservationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExpireReservationsResponse:
        if request.limit < 0:  # was read as 0: expire every due reservation
            raise InvalidArgument("limit", "must not be negative (0 means all that are due)")
        count, units = await release_expired_reservations(
            self._service.pool, self._service, batch_size=self._expiry_batch_size, limit=request.limit
        )
        return pb.ExpireReservationsResponse(expired_count=count, released_quantity=units)

    async def ListWarehouses(
        self, request: pb.ListWarehousesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWarehousesResponse:
        rows = await self._service.warehouses()
        return pb.ListWarehousesResponse(
            warehouses=[
                pb.Warehouse(id=r["id"], code=r["code"], name=r["name"], priority=r["priority"]) for r in rows
            ]
        )
