"""meshkit.tracing: what is recorded with and without an OTLP endpoint (no servers)."""

from __future__ import annotations

import secrets

import pytest
from opentelemetry import propagate, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from meshkit.outbox import _sampled
from meshkit.tracing import configure_tracing

PROPAGATOR = TraceContextTextMapPropagator()


@pytest.fixture(autouse=True)
def _no_global_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """configure_tracing installs its provider process-wide; these tests use the one it returns."""
    monkeypatch.setattr(trace, "set_tracer_provider", lambda provider: None)


def _sampled_flag_passed_on(span: trace.Span) -> bool:
    """The sampled bit of the traceparent this span would put on an outgoing call."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return bool(int(carrier["traceparent"].rsplit("-", 1)[1], 16) & 0x01)


def test_without_an_endpoint_a_new_trace_is_not_recorded_but_keeps_a_valid_id() -> None:
    tracer = configure_tracing("test-svc", "").get_tracer("test")
    first, second = tracer.start_span("a"), tracer.start_span("b")
    for span in (first, second):
        assert not span.is_recording()
        assert span.get_span_context().is_valid  # logs and audit records still get a trace id
        assert not _sampled_flag_passed_on(span)
    assert first.get_span_context().trace_id != second.get_span_context().trace_id


def test_without_an_endpoint_a_callers_sampled_trace_is_still_recorded_in_that_trace() -> None:
    tracer = configure_tracing("test-svc", "").get_tracer("test")
    trace_id = secrets.token_hex(16)
    parent = propagate.extract({"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
    span = tracer.start_span("child", context=parent)
    assert span.is_recording()
    assert format(span.get_span_context().trace_id, "032x") == trace_id
    assert _sampled_flag_passed_on(span)
    span.end()


def test_with_an_endpoint_new_traces_are_recorded() -> None:
    provider = configure_tracing("test-svc", "http://127.0.0.1:9")  # nothing is exported here
    try:
        span = provider.get_tracer("test").start_span("root")
        assert span.is_recording() and _sampled_flag_passed_on(span)
    finally:
        provider.shutdown()


def test_the_relay_makes_producer_spans_only_for_sampled_traces() -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"
    assert _sampled(f"{parent}-01") and _sampled(f"{parent}-03")
    assert not _sampled(f"{parent}-00") and not _sampled(f"{parent}-02")
    assert not _sampled("") and not _sampled("garbage-01")
