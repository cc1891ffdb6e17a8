"""Framework limit: a trivial grpc.aio echo server against GetProduct on a cache hit, same run, same ghz.

Goal (issue 10): GetProduct on a cache hit reaches >= 60% of the echo service's throughput.
"""

from __future__ import annotations

import asyncio
import base64
import sys

from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc

from bench.common import bench_mesh, internal_token, run_ghz, write_result
from catalog_svc import loader
from meshkit.db import open_pool
from meshkit.migrate import ROOT
from tests.harness import free_port

CONCURRENCY = (1, 16, 64)


async def run(*, duration_s: int = 5) -> dict:
    port = free_port()
    echo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.echo_server", str(port), cwd=ROOT
    )
    rows = []
    try:
        await asyncio.sleep(1.5)
        async with bench_mesh() as mesh:
            await mesh.start("catalog_svc")
            pool = await open_pool(mesh.database_url, schema="catalog", min_size=1, max_size=1)
            try:
                sellers = await loader.ensure_sellers(pool, ["Benchmark Seller"])
            finally:
                await pool.close()
            admin = catalog_pb2_grpc.CatalogServiceStub(
                mesh.channel("catalog_svc", "bench-admin", ("admin",))
            )
            created = await admin.CreateProduct(
                catalog_pb2.CreateProductRequest(
                    product=catalog_pb2.Product(
                        title="Benchmark trail running shoe",
                        description="A light shoe for benchmarks.",
                        brand="Bench",
                        seller_id=sellers["Benchmark Seller"],
                        price={"currency_code": "USD", "units": 89, "nanos": 990_000_000},
                    )
                )
            )
            product_id = created.product.id
            await admin.GetProduct(catalog_pb2.GetProductRequest(product_id=product_id))  # warm the cache
            token = internal_token(mesh.internal_secret, "anonymous", ("anonymous",))
            payload = base64.b64encode(b"x" * 100).decode()
            for c in CONCURRENCY:
                echo_result = await asyncio.to_thread(
                    run_ghz,
                    call="benchecho.Echo.Echo",
                    address=f"127.0.0.1:{port}",
                    data={"payload": payload},
                    token=token,
                    concurrency=c,
                    duration_s=duration_s,
                    proto=str(ROOT / "bench" / "echo.proto"),
                    connections=max(1, c // 16),
                )
                product = await asyncio.to_thread(
                    run_ghz,
                    call="shop.catalog.v1.CatalogService.GetProduct",
                    address=mesh.addr("catalog_svc"),
                    data={"product_id": str(product_id)},
                    token=token,
                    concurrency=c,
                    duration_s=duration_s,
                    proto="shop/catalog/v1/catalog.proto",
                    connections=max(1, c // 16),
                )
                rows.append({
                    "concurrency": c, "echo_rps": round(echo_result.rps), "echo_p99_ms": round(echo_result.p99_ms, 2),
                    "get_product_rps": round(product.rps), "get_product_p50_ms": round(product.p50_ms, 2),
                    "get_product_p99_ms": round(product.p99_ms, 2), "ratio": round(product.rps / echo_result.rps, 2),
                    "errors": product.errors,
                })  # fmt: skip
                print(
                    f"framework c={c}: echo {echo_result.rps:.0f} rps, GetProduct {product.rps:.0f} rps",
                    flush=True,
                )
                commands = {"echo": echo_result.command, "get_product": product.command}
    finally:
        echo.terminate()
        await echo.wait()
    best = max(rows, key=lambda r: r["ratio"])
    at16 = next(r for r in rows if r["concurrency"] == 16)
    return {
        "title": "Framework limit: echo vs GetProduct (cache hit)",
        "rows": rows,
        "commands": commands,
        "goals": [
            {
                "goal": "GetProduct (cache hit) >= 60% of echo throughput at 16 clients",
                "measured": f"{at16['ratio']:.2f}",
                "met": at16["ratio"] >= 0.6,
            },
        ],
        "notes": [
            f"Best ratio over the concurrency levels: {best['ratio']} at {best['concurrency']} clients."
        ],
    }


def main(duration_s: int = 5) -> dict:
    result = asyncio.run(run(duration_s=duration_s))
    write_result("framework_echo", result)
    return result


if __name__ == "__main__":
    main()
