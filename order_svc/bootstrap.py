"""Composition root of order_svc: builds clients, stores and use cases, registers servicers and jobs."""

from __future__ import annotations

import dataclasses

import grpc
import valkey.asyncio as valkey_asyncio
from psycopg_pool import AsyncConnectionPool
from shop.order.v1 import cart_pb2, cart_pb2_grpc, order_pb2, order_pb2_grpc

from meshkit.access import access_policy
from meshkit.auth import SERVICE_ROLE, TokenMinter
from meshkit.clients import open_channel
from meshkit.consumer import DedupConsumer
from meshkit.context import Principal
from meshkit.idempotency import IdempotencyStore
from meshkit.interceptors import AccessCheck
from meshkit.server import Runtime, Setup
from order_svc.archival import run_archival
from order_svc.cart import CartService
from order_svc.cart_cache import CartCache
from order_svc.checkout import CheckoutService
from order_svc.config import OrderSettings
from order_svc.consumers import ReservationExpiryHandler, is_reservation_expired
from order_svc.failpoints import Failpoints
from order_svc.lifecycle import OrderLifecycle
from order_svc.payments import build_provider
from order_svc.peers import CatalogClient, InventoryClient
from order_svc.recovery import RecoveryJob
from order_svc.saga import OrderSaga
from order_svc.server import CartServicer, OrderServicer


@dataclasses.dataclass
class OrderApp:
    """Every use case of order_svc, wired (also built by shopctl for the batch jobs)."""

    carts: CartService
    checkout: CheckoutService
    lifecycle: OrderLifecycle
    recovery: RecoveryJob
    cache: CartCache
    channels: list[grpc.aio.Channel]


def build_app(settings: OrderSettings, pool: AsyncConnectionPool, valkey: valkey_asyncio.Valkey) -> OrderApp:
    minter = TokenMinter(settings.internal_token_secret, Principal(settings.service_name, (SERVICE_ROLE,)))
    inventory_channel = open_channel(
        settings.inventory_addr, token_provider=minter.token, default_timeout=settings.rpc_deadline_seconds
    )
    catalog_channel = open_channel(
        settings.catalog_addr, token_provider=minter.token, default_timeout=settings.rpc_deadline_seconds
    )
    inventory = InventoryClient(inventory_channel)
    catalog = CatalogClient(catalog_channel, cache_seconds=settings.cart_catalog_cache_seconds)
    cache = CartCache(
        valkey, ttl_seconds=settings.cart_cache_ttl_seconds, key_prefix=settings.cache_key_prefix
    )
    failpoints = Failpoints(settings.failpoints)
    idempotency = IdempotencyStore(
        valkey,
        namespace=f"{settings.cache_key_prefix}order-checkout",
        service=settings.service_name,
        lease_seconds=settings.idempotency_lease_seconds,
        completed_ttl_seconds=settings.idempotency_ttl_seconds,
    )
    payments = build_provider(
        settings.payment_provider, pool, timeout_seconds=settings.payment_timeout_seconds
    )
    saga = OrderSaga(
        pool=pool,
        cache=cache,
        inventory=inventory,
        payments=payments,
        settings=settings,
        failpoints=failpoints,
    )
    lifecycle = OrderLifecycle(pool=pool, inventory=inventory, saga=saga, settings=settings)
    return OrderApp(
        carts=CartService(pool=pool, cache=cache, inventory=inventory, catalog=catalog, settings=settings),
        checkout=CheckoutService(
            pool=pool,
            idempotency=idempotency,
            catalog=catalog,
            saga=saga,
            settings=settings,
            failpoints=failpoints,
        ),
        lifecycle=lifecycle,
        recovery=RecoveryJob(
            pool=pool, saga=saga, lifecycle=lifecycle, idempotency=idempotency, settings=settings
        ),
        cache=cache,
        channels=[inventory_channel, catalog_channel],
    )


def make_setup(settings: OrderSettings) -> Setup:
    async def setup(runtime: Runtime, server: grpc.aio.Server) -> AccessCheck:
        app = build_app(settings, runtime.pool, runtime.valkey)
        for channel in app.channels:
            runtime.on_close(channel.close)
        runtime.on_close(app.cache.close)
        cart_pb2_grpc.add_CartServiceServicer_to_server(CartServicer(app.carts), server)
        order_pb2_grpc.add_OrderServiceServicer_to_server(
            OrderServicer(app.checkout, app.lifecycle, app.recovery), server
        )
        services = [
            cart_pb2.DESCRIPTOR.services_by_name["CartService"],
            order_pb2.DESCRIPTOR.services_by_name["OrderService"],
        ]
        runtime.service_names.extend(s.full_name for s in services)

        runtime.start_outbox_relay()
        consumer = DedupConsumer(
            bootstrap=settings.kafka_bootstrap,
            topics=[settings.topic_inventory_events],
            group_id=f"{settings.service_name}.{settings.topic_inventory_events}",
            consumer_name="order_svc.reservation-expiry",
            pool=runtime.pool,
            handler=ReservationExpiryHandler(app.cache),
            select=is_reservation_expired,
        )
        runtime.spawn("inventory-events-consumer", consumer.run)
        if settings.recovery_enabled:
            runtime.spawn("checkout-recovery", app.recovery.run)
        if settings.order_archive_interval_seconds > 0:
            runtime.spawn(
                "order-archival",
                lambda: run_archival(
                    runtime.pool,
                    database_url=settings.database_url,
                    interval_seconds=settings.order_archive_interval_seconds,
                ),
            )
        return access_policy(services)

    return setup
