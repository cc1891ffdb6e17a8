"""The recorded history of a fault run: every HTTP exchange with the gateway, as it happened.

Each `Op` is one request and its answer (or the transport error instead of one): what was asked
(kind, user, idempotency key or request id, attempt number), when (seconds since the run started)
and what came back (HTTP status, ErrorInfo reason, JSON body, the Idempotent-Replayed header).
Nothing is summarized while recording; the checker reads this list afterwards, Jepsen-style, and
`dump` writes it as JSON lines next to the test's other output.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

# statuses a client retries with the same idempotency key / request id
RETRYABLE_STATUSES = {0, 429, 499, 500, 502, 503, 504}
RETRYABLE_409_REASONS = {"IDEMPOTENCY_KEY_IN_PROGRESS", "ABORTED"}


@dataclasses.dataclass
class Op:
    op_id: int
    kind: str  # checkout | add | search | cart | recs | replay
    user: str
    key: str  # Idempotency-Key for checkouts, request_id for cart adds, "" for reads
    attempt: int
    started: float
    ended: float = -1.0
    status: int = -1  # HTTP status; 0 = no HTTP answer (transport error or timeout)
    reason: str = ""  # ErrorInfo reason, or the transport exception's class name
    body: dict[str, Any] | None = None
    replayed: bool = False

    @property
    def done(self) -> bool:
        return self.ended >= 0

    @property
    def latency(self) -> float:
        return self.ended - self.started

    @property
    def retryable(self) -> bool:
        if self.status in RETRYABLE_STATUSES:
            return True
        return self.status == 409 and self.reason in RETRYABLE_409_REASONS

    def error_metadata(self) -> dict[str, str]:
        for detail in ((self.body or {}).get("error") or {}).get("details") or []:
            if str(detail.get("@type", "")).endswith("ErrorInfo"):
                return dict(detail.get("metadata") or {})
        return {}


def _reason(body: dict[str, Any] | None) -> str:
    for detail in ((body or {}).get("error") or {}).get("details") or []:
        if str(detail.get("@type", "")).endswith("ErrorInfo"):
            return str(detail.get("reason", ""))
    return ""


class History:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.t0 = time.monotonic()
        self.wall0 = time.time()  # to find an op in the services' logs: wall0 + op.started
        self.ops: list[Op] = []
        self.marks: dict[str, float] = {}
        self.in_flight = 0
        self._changed = asyncio.Condition()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, name: str) -> float:
        """Record a moment (fault injected, server back...) on the history's clock."""
        self.marks[name] = self.now()
        return self.marks[name]

    async def request(
        self,
        kind: str,
        method: str,
        path: str,
        *,
        user: str,
        key: str = "",
        attempt: int = 0,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
        params: Any = None,
        timeout: float = 30.0,
    ) -> Op:
        op = Op(op_id=len(self.ops), kind=kind, user=user, key=key, attempt=attempt, started=self.now())
        self.ops.append(op)
        async with self._changed:
            self.in_flight += 1
            self._changed.notify_all()
        try:
            reply = await self.client.request(
                method, path, headers=headers, json=json_body, params=params, timeout=timeout
            )
        except httpx.HTTPError as exc:
            op.status, op.reason = 0, type(exc).__name__
        else:
            op.status = reply.status_code
            try:
                op.body = reply.json()
            except ValueError:
                op.body = {"raw": reply.text[:500]}
            op.reason = _reason(op.body)
            op.replayed = reply.headers.get("idempotent-replayed") == "true"
        finally:
            op.ended = self.now()
            async with self._changed:
                self.in_flight -= 1
                self._changed.notify_all()
        return op

    async def wait_in_flight(self, at_least: int, *, timeout: float = 30.0) -> int:
        """Wait until `at_least` requests are in flight at once; returns the count seen."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.in_flight >= at_least), timeout)
            return self.in_flight

    def in_flight_at(self, moment: float) -> int:
        return sum(1 for op in self.ops if op.started <= moment and (not op.done or op.ended > moment))

    def of_kind(self, *kinds: str) -> list[Op]:
        return [op for op in self.ops if op.kind in kinds]

    def by_key(self, *kinds: str) -> dict[tuple[str, str], list[Op]]:
        grouped: dict[tuple[str, str], list[Op]] = {}
        for op in self.of_kind(*kinds):
            grouped.setdefault((op.user, op.key), []).append(op)
        return grouped

    def retried_across(self, moment: float, *kinds: str) -> list[tuple[str, str]]:
        """Keys sent both before `moment` and again after it (the same key on both sides)."""
        return [
            key
            for key, ops in self.by_key(*kinds).items()
            if any(op.started < moment for op in ops) and any(op.started > moment for op in ops)
        ]

    def dump(self, path: Path) -> None:
        with path.open("w") as out:
            out.write(json.dumps({"wall0": self.wall0, "marks": self.marks}) + "\n")
            for op in self.ops:
                out.write(json.dumps(dataclasses.asdict(op), default=str) + "\n")


def percentile(values: Iterable[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]
