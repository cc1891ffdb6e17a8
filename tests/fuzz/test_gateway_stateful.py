"""schemathesis stateful (link-based) runs against the gateway's /openapi.json.

The gateway's document has no OpenAPI links, so this test adds them (tests only, not the served
document): what a create returns feeds the calls on that resource - product -> get / patch /
delete / adjust / also-bought, adjusted stock -> stock, cart line -> patch / delete, order -> get /
cancel / ship / deliver / refund - and narrows the sources' request bodies to values the services
accept, so the links are really followed. schemathesis chains the calls into sequences and checks
every answer: no 5xx, and status codes, content types and bodies as documented. Inferred links are
off (they chained a cart's user id into /v1/orders/{order_id}). Bounded by
SHOPMESH_FUZZ_STATEFUL_MAX_SECONDS and a fixed seed; at least 12 of the 14 links must be covered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg

from meshkit.settings import load_settings
from tests.harness import Mesh
from tests.integration.order_helpers import new_product

# Not use_after_free: DeleteProduct is a documented soft delete (the product stays readable,
# inactive). Not ensure_resource_availability: it reports a second DELETE along the same link
# (404, the line is gone) as "created resource not found".
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
SEED = 20251126

# (source operationId, status) -> [(target operationId, {parameter: runtime expression})]
LINKS: dict[tuple[str, str], list[tuple[str, dict[str, str]]]] = {
    ("CatalogService_CreateProduct", "201"): [
        (target, {"product_id": "$response.body#/product/id"})
        for target in (
            "CatalogService_GetProduct",
            "CatalogService_UpdateProduct",
            "CatalogService_DeleteProduct",
            "CatalogService_GetAlsoBought",
            "InventoryService_AdjustStock",  # delta > 0 creates the stock row
        )
    ],
    # inventory knows a product once it has stock, so its stock is linked from the adjustment
    ("InventoryService_AdjustStock", "200"): [
        ("InventoryService_GetStock", {"product_id": "$response.body#/stock/productId"}),
    ],
    ("CatalogService_ListProducts", "200"): [
        ("CatalogService_GetProduct", {"product_id": "$response.body#/products/0/id"}),
    ],
    ("CartService_AddCartItem", "200"): [
        (target, {"product_id": "$response.body#/item/productId"})
        for target in ("CartService_UpdateCartItem", "CartService_RemoveCartItem")
    ],
    ("OrderService_Checkout", "201"): [
        (target, {"order_id": "$response.body#/order/id"})
        for target in (
            "OrderService_GetOrder",
            "OrderService_CancelOrder",
            "OrderService_ShipOrder",
            "OrderService_DeliverOrder",
            "OrderService_RefundOrder",
        )
    ],
}


@dataclasses.dataclass(frozen=True)
class StatefulSettings:
    fuzz_stateful_examples: int = 20
    fuzz_stateful_max_seconds: int = 40


def plausible_inputs(schema: dict[str, Any], seller_id: str, product_ids: list[int]) -> dict[str, Any]:
    """Request bodies of the link sources narrowed to values the services accept (an existing seller,
    USD prices, short titles, products with stock, a valid address), so sequences get past validation
    and the links are followed. Only the request side is narrowed: responses are still checked
    against the served schemas."""
    schema["components"]["schemas"]["fuzz.ProductInput"] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["sellerId", "title", "price"],
        "properties": {
            "sellerId": {"type": "string", "enum": [seller_id]},
            "title": {"type": "string", "pattern": "^[A-Z][a-z]{2,10} [a-z0-9]{1,8}$"},
            "description": {"type": "string", "maxLength": 40},
            "brand": {"type": "string", "pattern": "^[A-Z][a-z]{1,8}$"},
            "rating": {"type": "number", "minimum": 0, "maximum": 5},
            "price": {
                "type": "object",
                "additionalProperties": False,
                "required": ["currencyCode", "units"],
                "properties": {
                    "currencyCode": {"type": "string", "enum": ["USD"]},
                    "units": {"type": "string", "pattern": "^[1-9][0-9]{0,2}$"},
                    "nanos": {"type": "integer", "minimum": 0, "maximum": 990000000, "multipleOf": 10000000},
                },
            },
        },
    }
    create = schema["paths"]["/v1/products"]["post"]["requestBody"]["content"]["application/json"]
    create["schema"] = {"$ref": "#/components/schemas/fuzz.ProductInput"}
    adjust_op = schema["paths"]["/v1/products/{product_id}/stock:adjust"]["post"]
    # outside links, only ids no catalog product will get: inventory takes stock for any id, and
    # stock added to a small id would be waiting when a later test's product gets that id
    for parameter in adjust_op.get("parameters", []):
        if parameter["name"] == "product_id":
            parameter["schema"] = {"type": "string", "pattern": "^9[0-9]{15}$"}
    adjust = adjust_op["requestBody"]
    adjust["content"]["application/json"]["schema"]["properties"].update(
        {
            "warehouseId": {"type": "string", "enum": ["1", "2"]},
            "delta": {"type": "integer", "minimum": 1, "maximum": 50},
        }
    )
    add = schema["paths"]["/v1/cart/items"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    add["properties"].update(
        {
            "productId": {"type": "string", "enum": [str(p) for p in product_ids]},
            "quantity": {"type": "integer", "minimum": 1, "maximum": 2},
            "requestId": {"type": "string", "pattern": "^[a-f0-9]{12}$"},
        }
    )
    word = {"type": "string", "pattern": "^[A-Z][a-z]{2,8}$"}
    schema["components"]["schemas"]["fuzz.Address"] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "line1", "city", "postalCode", "countryCode"],
        "properties": {
            "name": word,
            "line1": {"type": "string", "pattern": "^[1-9][0-9]? [A-Z][a-z]{2,8} St$"},
            "city": word,
            "postalCode": {"type": "string", "pattern": "^[0-9]{5}$"},
            "countryCode": {"type": "string", "enum": ["US", "GB"]},
        },
    }
    checkout = schema["paths"]["/v1/orders"]["post"]
    checkout["requestBody"]["content"]["application/json"]["schema"] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["shippingAddress"],
        "properties": {
            "shippingAddress": {"$ref": "#/components/schemas/fuzz.Address"},
            "paymentToken": {"type": "string", "enum": ["tok_approve", "tok_decline"]},
        },
    }
    for parameter in checkout["parameters"]:
        if parameter["name"] == "Idempotency-Key":
            parameter["schema"] = {"type": "string", "pattern": "^[a-z0-9]{16}$"}
    return schema


def with_links(schema: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The schema with LINKS added to the source operations' responses; returns it and the count."""
    operations = {
        op["operationId"]: op
        for path in schema["paths"].values()
        for op in path.values()
        if "operationId" in op
    }
    added = 0
    for (source, status), targets in LINKS.items():
        response = operations[source]["responses"][status]
        links = response.setdefault("links", {})
        for target, parameters in targets:
            assert target in operations, f"no operation {target} in /openapi.json"
            links[target] = {"operationId": target, "parameters": parameters}
            added += 1
    return schema, added


async def test_stateful_link_sequences_find_no_server_errors(fuzz_gateway: Mesh, tmp_path: Path) -> None:
    settings = load_settings(StatefulSettings)
    async with httpx.AsyncClient(timeout=10) as client:
        schema = (await client.get(f"{fuzz_gateway.gateway_url}/openapi.json")).raise_for_status().json()
    products = [await new_product(fuzz_gateway, stock=500) for _ in range(3)]
    schema, added = with_links(plausible_inputs(schema, seller(fuzz_gateway), products))
    assert added == sum(len(targets) for targets in LINKS.values())
    path = tmp_path / "openapi-with-links.json"
    path.write_text(json.dumps(schema))
    now = int(time.time())
    token = jwt.encode(
        {"sub": "stateful-admin", "roles": ["admin"], "aud": "shopmesh", "iat": now, "exp": now + 1800},
        fuzz_gateway.jwt_secret,
        algorithm="HS256",
    )
    config = tmp_path / "schemathesis.toml"
    # only the links declared above: inferred ones chained e.g. a cart's user id into /v1/orders/{id}
    config.write_text("[phases.stateful]\nmax-steps = 8\n\n[phases.stateful.inference]\nalgorithms = []\n")
    command = [
        str(Path(sys.executable).parent / "st"),
        "--config-file",
        str(config),
        "run",
        str(path),
        "--url",
        fuzz_gateway.gateway_url,
        "--phases",
        "stateful",
        "--checks",
        CHECKS,
        "--max-examples",
        str(settings.fuzz_stateful_examples),
        "--max-time",
        str(settings.fuzz_stateful_max_seconds),
        "--seed",
        str(SEED),
        "--generation-database",
        "none",
        "--workers",
        "1",
        "--request-timeout",
        "25",
        "--no-color",
        "--report",
        "har",
        "--report-dir",
        str(tmp_path / "report"),
        "--header",
        f"Authorization: Bearer {token}",
        # only the operations the links join (the single-operation fuzzing is test_gateway_schemathesis)
        *[arg for op in linked_operations() for arg in ("--include-operation-id", op)],
    ]
    result = await asyncio.to_thread(
        subprocess.run, command, cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False
    )
    output = result.stdout + result.stderr
    (tmp_path / "schemathesis.log").write_text(output)
    print(output[-2500:])
    assert result.returncode == 0, output[-8000:]
    covered = re.search(r"API Links:\s+(\d+) covered", output)
    assert covered and int(covered.group(1)) >= 12, f"links were not followed:\n{output[-3000:]}"


def linked_operations() -> list[str]:
    ops = {source for source, _ in LINKS} | {target for targets in LINKS.values() for target, _ in targets}
    return sorted(ops)


def seller(mesh: Mesh) -> str:
    """Sellers have no API (the catalog loader creates them): one for the fuzzer's products."""
    with psycopg.connect(mesh.database_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO catalog.sellers (name) VALUES ('stateful fuzz seller')"
            " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id"
        ).fetchone()
    assert row is not None
    return str(row[0])
