"""meshkit.circuit: the seed's breaker rules, with a fake clock."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from meshkit.circuit import BreakerOpen, BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gauge(service: str) -> float | None:
    return REGISTRY.get_sample_value("circuit_breaker_state", {"service": service})


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        permit = breaker.acquire()
        assert permit is not None
        permit.failure()


def make(name: str) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker(name, clock=clock), clock


def test_opens_after_three_consecutive_failures() -> None:
    breaker, _ = make("t-open")
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    assert breaker.acquire() is None
    assert gauge("t-open") == 2


def test_a_success_resets_the_failure_count() -> None:
    breaker, _ = make("t-reset")
    fail(breaker, 2)
    permit = breaker.acquire()
    assert permit is not None
    permit.success()
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN


def test_half_open_after_timeout_lets_one_probe_at_a_time() -> None:
    breaker, clock = make("t-half")
    fail(breaker, 3)
    clock.now += 9.9
    assert breaker.acquire() is None
    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN
    assert gauge("t-half") == 1
    probe = breaker.acquire()
    assert probe is not None and probe.is_probe
    assert breaker.acquire() is None  # the rest use the fallback while the probe runs
    assert breaker.acquire() is None
    probe.success()
    assert breaker.state is BreakerState.HALF_OPEN  # one success is not enough
    second = breaker.acquire()
    assert second is not None and second.is_probe
    assert breaker.acquire() is None
    second.success()
    assert breaker.state is BreakerState.CLOSED
    assert gauge("t-half") == 0
    assert breaker.acquire() is not None
    assert breaker.acquire() is not None  # closed: concurrent calls go through


def test_failed_probe_reopens_and_restarts_the_timeout() -> None:
    breaker, clock = make("t-reopen")
    fail(breaker, 3)
    clock.now += 10
    probe = breaker.acquire()
    assert probe is not None
    probe.success()
    probe2 = breaker.acquire()
    assert probe2 is not None
    probe2.failure()
    assert breaker.state is BreakerState.OPEN
    clock.now += 9
    assert breaker.acquire() is None
    clock.now += 1
    probe3 = breaker.acquire()
    assert probe3 is not None and probe3.is_probe
    probe3.success()
    # successes must be consecutive within one half-open period: the earlier one does not count
    assert breaker.state is BreakerState.HALF_OPEN


def test_abandoned_probe_frees_the_slot_without_counting() -> None:
    breaker, clock = make("t-abandon")
    fail(breaker, 3)
    clock.now += 10
    probe = breaker.acquire()
    assert probe is not None
    probe.abandon()
    assert breaker.state is BreakerState.HALF_OPEN
    again = breaker.acquire()
    assert again is not None and again.is_probe


def test_late_outcomes_of_calls_let_through_while_closed_do_not_corrupt_state() -> None:
    breaker, clock = make("t-late")
    slow = breaker.acquire()
    assert slow is not None
    fail(breaker, 3)
    slow.success()  # finished after the breaker opened: must not close it
    assert breaker.state is BreakerState.OPEN
    clock.now += 10
    probe = breaker.acquire()
    assert probe is not None
    late = breaker.acquire()
    assert late is None
    probe.failure()
    assert breaker.state is BreakerState.OPEN


async def test_call_wrapper_counts_failures_and_refuses_when_open() -> None:
    breaker, clock = make("t-call")

    async def boom() -> int:
        raise ConnectionError("down")

    async def ok() -> int:
        return 7

    for _ in range(3):
        with pytest.raises(ConnectionError):
            await breaker.call(boom)
    with pytest.raises(BreakerOpen):
        await breaker.call(ok)
    clock.now += 10
    assert await breaker.call(ok) == 7
    assert await breaker.call(ok) == 7
    assert breaker.state is BreakerState.CLOSED


async def test_call_wrapper_ignores_non_failures_and_cancellation() -> None:
    breaker, clock = make("t-ignore")

    async def bad_request() -> int:
        raise ValueError("our fault")

    for _ in range(5):
        with pytest.raises(ValueError):
            await breaker.call(bad_request, is_failure=lambda exc: not isinstance(exc, ValueError))
    assert breaker.state is BreakerState.CLOSED

    fail(breaker, 3)
    clock.now += 10
    started = asyncio.Event()

    async def hang() -> int:
        started.set()
        await asyncio.sleep(60)
        return 1

    task = asyncio.create_task(breaker.call(hang))
    await started.wait()
    assert breaker.acquire() is None  # the hanging call is the probe
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.acquire() is not None  # slot released by the cancellation
