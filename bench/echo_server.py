"""A trivial grpc.aio echo server (bytes in, bytes out, generic handler): the framework's own limit.

`python -m bench.echo_server PORT` serves `/benchecho.Echo/Echo` (bench/echo.proto) until SIGTERM:
the request's bytes are returned as they are, with no deserialization at all.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import grpc


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def serve(port: int) -> None:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "benchecho.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
