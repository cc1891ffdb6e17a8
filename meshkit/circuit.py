"""Circuit breaker for calls to a dependency that has a fallback (catalog search -> PostgreSQL).

Semantics (the seed's Deep Dive 3, exactly):

  CLOSED     every call goes through; `failure_threshold` (3) consecutive failures -> OPEN.
  OPEN       no call goes through (callers use their fallback) until `reset_timeout` (10 s) has
             passed since it opened; the next call attempt then finds it HALF_OPEN.
  HALF_OPEN  ONE probe call at a time goes through; while it is in flight every other call is
             refused (fallback). `success_threshold` (2) consecutive successful probes -> CLOSED;
             a failed probe -> OPEN again (the 10 s start over).

A probe that is cancelled (the caller's deadline expired) proves nothing: it frees the probe slot
without counting as a success or a failure.

Why not a library: pybreaker and aiobreaker close on the first success in half-open and let every
concurrent caller through; purgatory and circuitbreaker have no success threshold. The rules above
need about a hundred lines, so they live here, with the clock injectable for unit tests.

Single event loop only (one per worker process): state changes happen between awaits, so no lock
is needed. The state is exported as the gauge `circuit_breaker_state{service}` (0 closed,
1 half-open, 2 open), the seed's metric.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import Counter, Gauge

T = TypeVar("T")

circuit_breaker_state = Gauge(
    "circuit_breaker_state", "Circuit breaker state: 0=closed, 1=half-open, 2=open.", ["service"]
)
circuit_breaker_transitions_total = Counter(
    "circuit_breaker_transitions_total", "Circuit breaker state changes, by new state.", ["service", "state"]
)
circuit_breaker_rejections_total = Counter(
    "circuit_breaker_rejections_total", "Calls refused by an open or busy half-open breaker.", ["service"]
)


class BreakerState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class BreakerOpen(Exception):
    """Raised by `CircuitBreaker.call` when the call was not let through."""

    def __init__(self, service: str, state: BreakerState) -> None:
        super().__init__(f"circuit for {service} is {state.name.lower()}")
        self.service = service
        self.state = state


class Permit:
    """Leave to make one call; report its outcome exactly once with `success()` or `failure()`."""

    __slots__ = ("_breaker", "_done", "is_probe")

    def __init__(self, breaker: CircuitBreaker, *, is_probe: bool) -> None:
        self._breaker = breaker
        self.is_probe = is_probe
        self._done = False

    def success(self) -> None:
        if not self._done:
            self._done = True
            self._breaker._on_success(self)

    def failure(self) -> None:
        if not self._done:
            self._done = True
            self._breaker._on_failure(self)

    def abandon(self) -> None:
        """The call was cancelled: release the probe slot, count nothing."""
        if not self._done:
            self._done = True
            self._breaker._on_abandon(self)


class CircuitBreaker:
    def __init__(
        self,
        service: str,
        *,
        failure_threshold: int = 3,
        success_threshold: int = 2,
        reset_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or success_threshold < 1 or reset_timeout < 0:
            raise ValueError("thresholds must be >= 1 and reset_timeout >= 0")
        self.service = service
        self.failure_threshold = failure_threshold
        self.success_threshold = success_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._probe_successes = 0
        self._probe_in_flight = False
        self._opened_at = 0.0
        circuit_breaker_state.labels(service).set(BreakerState.CLOSED)

    @property
    def state(self) -> BreakerState:
        """Current state; an OPEN breaker whose timeout has passed reads as HALF_OPEN."""
        self._maybe_half_open()
        return self._state

    def acquire(self) -> Permit | None:
        """A permit to call the dependency, or None: use the fallback."""
        self._maybe_half_open()
        if self._state is BreakerState.CLOSED:
            return Permit(self, is_probe=False)
        if self._state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return Permit(self, is_probe=True)
        circuit_breaker_rejections_total.labels(self.service).inc()
        return None

    async def call(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        is_failure: Callable[[BaseException], bool] = lambda _exc: True,
    ) -> T:
        """Run `operation` through the breaker; raises BreakerOpen when refused.

        Exceptions for which `is_failure` is false (e.g. a bad request) propagate without counting
        against the dependency; they still end a probe without closing the breaker.
        """
        permit = self.acquire()
        if permit is None:
            raise BreakerOpen(self.service, self._state)
        try:
            result = await operation()
        except BaseException as exc:
            if isinstance(exc, Exception) and is_failure(exc):
                permit.failure()
            else:
                permit.abandon()
            raise
        permit.success()
        return result

    # -- transitions -----------------------------------------------------------------------------

    def _maybe_half_open(self) -> None:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_timeout:
            self._probe_successes = 0
            self._probe_in_flight = False
            self._set(BreakerState.HALF_OPEN)

    def _on_success(self, permit: Permit) -> None:
        if permit.is_probe:
            self._probe_in_flight = False
            if self._state is not BreakerState.HALF_OPEN:
                return
            self._probe_successes += 1
            if self._probe_successes >= self.success_threshold:
                self._failures = 0
                self._set(BreakerState.CLOSED)
        elif self._state is BreakerState.CLOSED:
            self._failures = 0

    def _on_failure(self, permit: Permit) -> None:
        if permit.is_probe:
            self._probe_in_flight = False
            if self._state is BreakerState.HALF_OPEN:
                self._open()
            return
        if self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open()

    def _on_abandon(self, permit: Permit) -> None:
        if permit.is_probe:
            self._probe_in_flight = False

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._failures = 0
        self._probe_successes = 0
        self._probe_in_flight = False
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            circuit_breaker_transitions_total.labels(self.service, state.name.lower()).inc()
        circuit_breaker_state.labels(self.service).set(int(state))
