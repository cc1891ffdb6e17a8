"""OpenTelemetry tracing: OTLP export when SHOPMESH_OTLP_ENDPOINT is set, W3C context in gRPC and Kafka."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler


def configure_tracing(service: str, otlp_endpoint: str) -> TracerProvider:
    """Install the tracer provider; spans are exported only when an endpoint is configured.

    Without an endpoint nothing reads the spans, so a trace the caller did not ask to sample is not
    recorded: each span is a non-recording one that still carries a valid trace id (new, or the
    caller's), so logs, audit records and the traceparent passed on keep their ids. Recording a span
    nobody exports cost catalog_svc ~6% of its CPU under checkout load (one span per consumed
    record). A caller's sampled trace (traceparent flag 01) is still recorded and passed on sampled.
    """
    sampler: Sampler | None = None if otlp_endpoint else ParentBased(root=ALWAYS_OFF)
    provider = TracerProvider(resource=Resource.create({"service.name": service}), sampler=sampler)
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


# request/response fields a trace reader searches by, as span attributes
_ID_FIELDS = {"order_id": "shop.order_id", "product_id": "shop.product_id"}


def annotate_span(message: object) -> None:
    """Put the ids of an RPC's request or response on the current span: order id, product id, and a
    hash of the idempotency key. Never the key itself, tokens or personal data (addresses, names)."""
    span = trace.get_current_span()
    descriptor = getattr(message, "DESCRIPTOR", None)
    if not span.is_recording() or descriptor is None:
        return
    fields = descriptor.fields_by_name
    for field, attribute in _ID_FIELDS.items():
        value = getattr(message, field, None) if field in fields else None
        if isinstance(value, str | int) and value:
            span.set_attribute(attribute, value)
    key = getattr(message, "idempotency_key", None) if "idempotency_key" in fields else None
    if isinstance(key, str) and key:
        span.set_attribute("shop.idempotency_key_hash", hashlib.sha256(key.encode()).hexdigest()[:16])
    order = getattr(message, "order", None) if "order" in fields else None
    order_id = getattr(order, "id", None)
    if isinstance(order_id, str) and order_id:
        span.set_attribute("shop.order_id", order_id)
