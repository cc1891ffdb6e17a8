"""The gRPC servicers: request -> arguments, one use-case call, result -> response. Nothing else."""

from __future__ import annotations

import datetime as dt

import grpc
from shop.order.v1 import cart_pb2, cart_pb2_grpc, order_pb2, order_pb2_grpc

from meshkit.context import Principal, current_principal
from meshkit.errors import InvalidArgument, Unauthenticated
from order_svc import convert
from order_svc.cart import CartService
from order_svc.checkout import CheckoutService
from order_svc.lifecycle import OrderLifecycle
from order_svc.model import validate_checkout
from order_svc.recovery import RecoveryJob

MAX_RECOVERY_MIN_AGE = dt.timedelta(days=3650)

# gRPC metadata marking a replayed checkout answer (success or error); see docs/GATEWAY.md
REPLAYED_METADATA_KEY = "x-idempotent-replayed"


def _principal() -> Principal:
    principal = current_principal()
    if principal is None:
        raise Unauthenticated("no caller", reason="MISSING_CREDENTIALS")
    return principal


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _recovery_min_age(request: order_pb2.RecoverOrdersRequest) -> dt.timedelta | None:
    """The optional min_age, bounded: an age beyond the calendar's range made the query fail (INTERNAL)."""
    if not request.HasField("min_age"):
        return None
    try:
        min_age = request.min_age.ToTimedelta()
    except (OverflowError, ValueError):
        min_age = None
    if min_age is None or not dt.timedelta(0) <= min_age <= MAX_RECOVERY_MIN_AGE:
        raise InvalidArgument("min_age", "must be between 0 and 3650 days")
    return min_age


class CartServicer(cart_pb2_grpc.CartServiceServicer):
    def __init__(self, carts: CartService) -> None:
        self._carts = carts

    async def GetCart(
        self, request: cart_pb2.GetCartRequest, context: grpc.aio.ServicerContext
    ) -> cart_pb2.GetCartResponse:
        return cart_pb2.GetCartResponse(cart=await self._carts.get_cart(_principal().subject))

    async def ClearCart(
        self, request: cart_pb2.ClearCartRequest, context: grpc.aio.ServicerContext
    ) -> cart_pb2.ClearCartResponse:
        return cart_pb2.ClearCartResponse(cart=await self._carts.clear_cart(_principal().subject))

    async def AddCartItem(
        self, request: cart_pb2.AddCartItemRequest, context: grpc.aio.ServicerContext
    ) -> cart_pb2.AddCartItemResponse:
        line, info = await self._carts.add_item(
            _principal().subject,
            product_id=request.product_id,
            quantity=request.quantity,
            request_id=request.request_id,
        )
        return cart_pb2.AddCartItemResponse(item=convert.cart_line_out(line, info, _now()))

    async def UpdateCartItem(
        self, request: cart_pb2.UpdateCartItemRequest, context: grpc.aio.ServicerContext
    ) -> cart_pb2.UpdateCartItemResponse:
        line, info = await self._carts.update_item(
            _principal().subject, product_id=request.product_id, quantity=request.quantity
        )
        return cart_pb2.UpdateCartItemResponse(item=convert.cart_line_out(line, info, _now()))

    async def RemoveCartItem(
        self, request: cart_pb2.RemoveCartItemRequest, context: grpc.aio.ServicerContext
    ) -> cart_pb2.RemoveCartItemResponse:
        cart = await self._carts.remove_item(_principal().subject, product_id=request.product_id)
        return cart_pb2.RemoveCartItemResponse(cart=cart)


class OrderServicer(order_pb2_grpc.OrderServiceServicer):
    def __init__(self, checkout: CheckoutService, lifecycle: OrderLifecycle, recovery: RecoveryJob) -> None:
        self._checkout = checkout
        self._lifecycle = lifecycle
        self._recovery = recovery

    async def Checkout(
        self, request: order_pb2.CheckoutRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.CheckoutResponse:
        checkout = validate_checkout(
            user_id=_principal().subject,
            idempotency_key=request.idempotency_key,
            shipping=convert.address_in(request.shipping_address)
            if request.HasField("shipping_address")
            else None,
            billing=convert.address_in(request.billing_address)
            if request.HasField("billing_address")
            else None,
            payment_token=request.payment_token,
            notes=request.notes,
            request_id=request.request_id,
        )
        outcome, replayed = await self._checkout.checkout(checkout)
        if replayed:  # the gateway turns this into `Idempotent-Replayed: true`
            await context.send_initial_metadata(((REPLAYED_METADATA_KEY, "true"),))
        return convert.decode_outcome(outcome)

    async def GetOrder(
        self, request: order_pb2.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.GetOrderResponse:
        order = await self._lifecycle.get(_principal(), request.order_id)
        return order_pb2.GetOrderResponse(order=convert.order_out(order))

    async def ListOrders(
        self, request: order_pb2.ListOrdersRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.ListOrdersResponse:
        orders, token = await self._lifecycle.list(
            _principal().subject, page_size=request.page_size, page_token=request.page_token
        )
        return order_pb2.ListOrdersResponse(
            orders=[convert.order_out(o) for o in orders], next_page_token=token
        )

    async def CancelOrder(
        self, request: order_pb2.CancelOrderRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.CancelOrderResponse:
        order = await self._lifecycle.cancel(_principal(), request.order_id, request.reason)
        return order_pb2.CancelOrderResponse(order=convert.order_out(order))

    async def ShipOrder(
        self, request: order_pb2.ShipOrderRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.ShipOrderResponse:
        order = await self._lifecycle.ship(request.order_id, request.tracking_number)
        return order_pb2.ShipOrderResponse(order=convert.order_out(order))

    async def DeliverOrder(
        self, request: order_pb2.DeliverOrderRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.DeliverOrderResponse:
        order = await self._lifecycle.deliver(request.order_id)
        return order_pb2.DeliverOrderResponse(order=convert.order_out(order))

    async def RefundOrder(
        self, request: order_pb2.RefundOrderRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.RefundOrderResponse:
        order = await self._lifecycle.refund(request.order_id, request.reason, restock=request.restock)
        return order_pb2.RefundOrderResponse(order=convert.order_out(order))

    async def RecoverOrders(
        self, request: order_pb2.RecoverOrdersRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.RecoverOrdersResponse:
        min_age = _recovery_min_age(request)
        completed, compensated = await self._recovery.recover(min_age=min_age, limit=max(request.limit, 0))
        return order_pb2.RecoverOrdersResponse(
            completed_order_ids=[str(i) for i in completed],
            compensated_order_ids=[str(i) for i in compensated],
        )
