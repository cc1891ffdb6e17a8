"""Composition root of inventory_svc: wires settings, pool, service, servicer and background jobs."""

from __future__ import annotations

import grpc
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from inventory_svc.config import InventorySettings
from inventory_svc.jobs import run_expiry_sweeper, run_invariant_checker
from inventory_svc.server import InventoryServicer
from inventory_svc.service import InventoryService
from meshkit.access import access_policy
from meshkit.interceptors import AccessCheck
from meshkit.server import Runtime, Setup


def make_setup(settings: InventorySettings) -> Setup:
    async def setup(runtime: Runtime, server: grpc.aio.Server) -> AccessCheck:
        service = InventoryService(pool=runtime.pool, settings=settings)
        servicer = InventoryServicer(service, expiry_batch_size=settings.expiry_batch_size)
        inventory_pb2_grpc.add_InventoryServiceServicer_to_server(servicer, server)
        descriptor = inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"]
        runtime.service_names.append(descriptor.full_name)

        runtime.start_outbox_relay()
        runtime.spawn(
            "reservation-expiry",
            lambda: run_expiry_sweeper(
                runtime.pool,
                service,
                interval=settings.expiry_interval_seconds,
                batch_size=settings.expiry_batch_size,
            ),
        )
        runtime.spawn(
            "invariant-checker",
            lambda: run_invariant_checker(runtime.pool, interval=settings.invariant_check_interval_seconds),
        )
        return access_policy([descriptor])

    return setup
