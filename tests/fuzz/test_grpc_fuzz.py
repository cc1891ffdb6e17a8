"""Every RPC of every service, fed arbitrary request messages over real gRPC (tests/fuzz/strategies.py).

Sent with an internal token for an admin that is also a service, so access control lets every call
through to the handler. For each RPC: no answer is INTERNAL, UNKNOWN, UNAVAILABLE or a timeout (a
crash or an unmapped exception); a request missing a REQUIRED field is INVALID_ARGUMENT; and every
service process is still alive afterwards. Examples per RPC: SHOPMESH_FUZZ_EXAMPLES (default 40).
"""

from __future__ import annotations

import dataclasses
import importlib

import grpc
import pytest
from google.protobuf import descriptor, message_factory
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from shop.audit.v1 import audit_pb2
from shop.catalog.v1 import catalog_pb2
from shop.inventory.v1 import inventory_pb2
from shop.order.v1 import cart_pb2, order_pb2

from meshkit.auth import INTERNAL_TOKEN_HEADER, mint_internal_token
from meshkit.context import Principal
from meshkit.migrate import ROOT
from meshkit.settings import load_settings
from tests.fuzz.conftest import SERVICES
from tests.fuzz.strategies import message, missing_required
from tests.harness import Mesh

SERVES = {
    "shop.catalog.v1.CatalogService": ("catalog_svc",),
    "shop.inventory.v1.InventoryService": ("inventory_svc",),
    "shop.order.v1.CartService": ("order_svc",),
    "shop.order.v1.OrderService": ("order_svc",),
    "shop.audit.v1.AuditService": SERVICES,
}
MODULES = (catalog_pb2, inventory_pb2, cart_pb2, order_pb2, audit_pb2)
FORBIDDEN = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED,
}
GENERATED = ROOT / "generated"
# Inventory takes stock for any product id, so stock received here for a small id would be waiting
# when the catalog later creates that product for another test: stock-creating calls get far ids.
STOCK_CREATING = {
    "shop.inventory.v1.InventoryService.ReceiveStock",
    "shop.inventory.v1.InventoryService.AdjustStock",
}
FAR_IDS = 10**15
PRINCIPAL = Principal("fuzz-admin", ("admin", "service"))


@dataclasses.dataclass(frozen=True)
class FuzzSettings:
    fuzz_examples: int = 40


@dataclasses.dataclass(frozen=True)
class Target:
    process: str
    method: descriptor.MethodDescriptor

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    def __str__(self) -> str:
        return f"{self.process}:{self.method.containing_service.name}.{self.method.name}"


def _targets() -> list[Target]:
    found = []
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for process in SERVES[service.full_name]:
                found.extend(Target(process, method) for method in service.methods)
    return found


TARGETS = _targets()


def test_every_rpc_of_every_service_is_fuzzed() -> None:
    """Every service in generated/ (one per proto package) is served somewhere and fuzzed here."""
    declared = set()
    for path in sorted(GENERATED.glob("shop/*/v1/*_pb2.py")):
        module = importlib.import_module(".".join(path.relative_to(GENERATED).with_suffix("").parts))
        declared |= {m.full_name for s in module.DESCRIPTOR.services_by_name.values() for m in s.methods}
    assert {t.method.full_name for t in TARGETS} == declared


@pytest.mark.parametrize("target", TARGETS, ids=str)
def test_arbitrary_requests_never_fail_internally(fuzz_mesh: Mesh, target: Target) -> None:
    examples = load_settings(FuzzSettings).fuzz_examples
    request_class = message_factory.GetMessageClass(target.method.input_type)
    response_class = message_factory.GetMessageClass(target.method.output_type)
    token = mint_internal_token(fuzz_mesh.internal_secret, PRINCIPAL, ttl_seconds=900)
    answers: dict[str, int] = {}
    with grpc.insecure_channel(fuzz_mesh.addr(target.process)) as channel:
        call = channel.unary_unary(
            target.path,
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(request=message(target.method.input_type))
        def check(request: Message) -> None:
            if target.method.full_name in STOCK_CREATING and 0 < request.product_id < FAR_IDS:
                request.product_id += FAR_IDS
            try:
                call(request, metadata=[(INTERNAL_TOKEN_HEADER, token)], timeout=20)
                code = grpc.StatusCode.OK
                details = ""
            except grpc.RpcError as error:
                code, details = error.code(), error.details()
            answers[code.name] = answers.get(code.name, 0) + 1
            assert code not in FORBIDDEN, f"{target}: {code.name} {details!r} for {request!r}"[:3000]
            missing = missing_required(request)
            if missing:
                assert code == grpc.StatusCode.INVALID_ARGUMENT, (
                    f"{target}: REQUIRED {missing} unset, answered {code.name} {details!r} for {request!r}"
                )[:3000]

        check()
    dead = [name for name in SERVICES if not fuzz_mesh.procs[name].running]
    assert not dead, f"{dead} died while fuzzing {target}: {fuzz_mesh.procs[dead[0]].log_tail()}"
    print(f"{target}: {answers}")
