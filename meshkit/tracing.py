"""OpenTelemetry tracing: OTLP export when SHOPMESH_OTLP_ENDPOINT is set, W3C context in gRPC and Kafka."""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def configure_tracing(service: str, otlp_endpoint: str) -> TracerProvider:
    """Install the tracer provider; spans are exported only when an endpoint is configured."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True), schedule_delay_millis=200
            )
        )
    trace.set_tracer_provider(provider)
    return provider


def instrument_grpc() -> None:
    """Server and client spans for grpc.aio, with context carried in metadata."""
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer

    GrpcAioInstrumentorServer().instrument()
    GrpcAioInstrumentorClient().instrument()


def inject_headers() -> dict[str, str]:
    """The current trace context as W3C headers (traceparent/tracestate) for a Kafka record."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def extract_context(headers: Iterable[tuple[str, bytes]] | None) -> otel_context.Context:
    """The trace context carried in Kafka record headers."""
    carrier = {key: value.decode("latin-1") for key, value in (headers or []) if value is not None}
    return propagate.extract(carrier)
