"""Payment provider interface and the sandbox provider (deterministic test tokens, like Stripe's).

Every provider call carries an idempotency key: the provider keeps one charge per key, so a retried
or concurrent charge with the same key returns the first charge instead of charging twice. order_svc
uses `order:<order id>` as the key.

Sandbox tokens:
  tok_approve (and an empty token)  captured
  tok_decline                       declined, decline_code "card_declined"
  tok_insufficient_funds            declined, decline_code "insufficient_funds"
  tok_timeout                       no answer within the timeout; nothing captured
  tok_error                         provider error (HTTP 5xx); nothing captured
  tok_capture_timeout               captured, but the answer is lost (timeout): the "unknown outcome"
                                    case, resolved by `lookup`
Anything else is declined with "invalid_token".
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from decimal import Decimal
from typing import Protocol

from psycopg_pool import AsyncConnectionPool

from meshkit.db import connection


class PaymentTimeout(Exception):
    """The provider did not answer in time; the outcome is unknown until `lookup`."""


class PaymentProviderError(Exception):
    """The provider failed (5xx) or refused the request; nothing was captured by this call."""


@dataclasses.dataclass(frozen=True)
class Charge:
    status: str  # captured | declined | voided | refunded
    reference: str
    amount: Decimal
    decline_code: str = ""

    @property
    def captured(self) -> bool:
        """Money was taken (and may have been refunded since)."""
        return self.status in ("captured", "refunded")


class PaymentProvider(Protocol):
    name: str

    async def charge(self, *, idempotency_key: str, amount: Decimal, currency: str, token: str) -> Charge:
        """Capture `amount`; the same key returns the first charge."""
        ...

    async def lookup(self, idempotency_key: str) -> Charge | None:
        """The charge made under the key, if any."""
        ...

    async def void(self, idempotency_key: str) -> Charge | None:
        """Close the key: a later charge with it is refused. Returns the existing charge, if one was made."""
        ...

    async def refund(self, idempotency_key: str) -> Charge:
        """Refund the whole captured charge; refunding twice refunds once."""
        ...


_CHARGE_COLUMNS = "status, reference, amount, coalesce(decline_code, '') AS decline_code"


def _charge(row: dict) -> Charge:
    return Charge(
        status=row["status"],
        reference=row["reference"],
        amount=row["amount"],
        decline_code=row["decline_code"],
    )


def _same_amount(existing: Charge, amount: Decimal) -> Charge:
    if existing.captured and existing.amount != amount:
        raise PaymentProviderError("idempotency key reused with a different amount")
    return existing


class SandboxProvider:
    """A provider stand-in keeping its ledger in `sandbox_charges`, outside order transactions."""

    name = "sandbox"

    def __init__(self, pool: AsyncConnectionPool, *, timeout_seconds: float) -> None:
        self._pool = pool
        self._timeout = timeout_seconds

    async def charge(self, *, idempotency_key: str, amount: Decimal, currency: str, token: str) -> Charge:
        if token in ("tok_timeout", "tok_error"):
            # these never record a charge, but a charge made earlier under the key is still answered
            existing = await self._bump_existing(idempotency_key)
            if existing is not None:
                return _same_amount(existing, amount)
            if token == "tok_timeout":
                await asyncio.sleep(self._timeout)
                raise PaymentTimeout(f"no answer within {self._timeout}s")
            raise PaymentProviderError("provider error (sandbox tok_error)")
        decline = {
            "tok_approve": "",
            "tok_capture_timeout": "",
            "tok_decline": "card_declined",
            "tok_insufficient_funds": "insufficient_funds",
        }.get(token, "invalid_token")
        # one statement: the first call with the key records its charge, a repeat counts an attempt
        # and gets the first charge back
        async with connection(self._pool) as conn:
            cur = await conn.execute(
                "INSERT INTO sandbox_charges AS c (idempotency_key, reference, status, amount, currency,"
                " decline_code) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (idempotency_key) DO UPDATE SET attempts = c.attempts + 1"
                f" RETURNING {_CHARGE_COLUMNS}, c.attempts = 1 AS first",
                (
                    idempotency_key,
                    f"ch_{uuid.uuid4().hex[:24]}",
                    "declined" if decline else "captured",
                    amount,
                    currency,
                    decline or None,
                ),
            )
            row = await cur.fetchone()
        assert row is not None
        if not row["first"]:
            return _same_amount(_charge(row), amount)
        if token == "tok_capture_timeout":
            raise PaymentTimeout("captured, but the answer was lost")
        return _charge(row)

    async def lookup(self, idempotency_key: str) -> Charge | None:
        async with connection(self._pool) as conn:
            cur = await conn.execute(
                f"SELECT {_CHARGE_COLUMNS} FROM sandbox_charges WHERE idempotency_key = %s",
                (idempotency_key,),
            )
            row = await cur.fetchone()
        return _charge(row) if row else None

    async def void(self, idempotency_key: str) -> Charge | None:
        async with connection(self._pool) as conn:
            cur = await conn.execute(
                "INSERT INTO sandbox_charges (idempotency_key, reference, status, amount, currency)"
                " VALUES (%s, %s, 'voided', 0, 'USD') ON CONFLICT (idempotency_key) DO NOTHING RETURNING 1",
                (idempotency_key, f"void_{uuid.uuid4().hex[:24]}"),
            )
            if await cur.fetchone() is not None:
                return None
        return await self.lookup(idempotency_key)

    async def refund(self, idempotency_key: str) -> Charge:
        async with connection(self._pool) as conn:
            cur = await conn.execute(
                "UPDATE sandbox_charges SET status = 'refunded', refunded_at = coalesce(refunded_at, now())"
                f" WHERE idempotency_key = %s AND status IN ('captured', 'refunded') RETURNING {_CHARGE_COLUMNS}",
                (idempotency_key,),
            )
            row = await cur.fetchone()
        if row is None:
            raise PaymentProviderError(f"no captured charge under {idempotency_key}")
        return _charge(row)

    async def _bump_existing(self, idempotency_key: str) -> Charge | None:
        async with connection(self._pool) as conn:
            cur = await conn.execute(
                "UPDATE sandbox_charges SET attempts = attempts + 1 WHERE idempotency_key = %s"
                f" RETURNING {_CHARGE_COLUMNS}",
                (idempotency_key,),
            )
            row = await cur.fetchone()
        return _charge(row) if row else None


def build_provider(name: str, pool: AsyncConnectionPool, *, timeout_seconds: float) -> PaymentProvider:
    if name == "sandbox":
        return SandboxProvider(pool, timeout_seconds=timeout_seconds)
    raise ValueError(f"unknown payment provider {name!r} (SHOPMESH_PAYMENT_PROVIDER)")
