"""Valkey fast path for idempotent requests: layer 1 of exactly-once (the service's own UNIQUE
constraint in PostgreSQL is layer 2 and the source of truth).

One Valkey string per (namespace, scope, key), holding JSON:

    {"s": "processing", "h": <request hash>, "t": <lease token>}   PX lease_seconds (about 30 s)
    {"s": "completed",  "h": <request hash>, "r": <base64 response>} EX completed_ttl (24 h)

`begin` does `SET NX PX` of a processing marker. If that wins, the caller holds a *lease*: it must
renew it while it works (`keep_alive`), so a long request keeps the key, while a crashed one frees
it within one lease period instead of blocking retries for a day. The caller finishes with
`complete(response)` (the response is replayed byte for byte to later callers for 24 h) or
`release()` (a retryable failure: the next attempt may start at once).

If the marker exists: a completed entry with the same request hash is replayed; one with another
hash is IDEMPOTENCY_KEY_REUSED (as is a processing marker with another hash); a processing marker
with the same hash is IDEMPOTENCY_KEY_IN_PROGRESS (ABORTED, "retry later").

Renew, release and the completed write compare the exact value this lease wrote (Lua, atomic), so an
expired lease never deletes or extends a marker another attempt has since written.

Fail-open: when Valkey is unreachable or was flushed, `begin` hands back a *degraded* lease whose
operations do nothing. Correctness then rests on layer 2, which every caller must implement: the
database decides (UNIQUE key, a lease column, the stored outcome); Valkey only saves round trips.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import valkey.asyncio as valkey_asyncio
import valkey.exceptions as valkey_errors
from prometheus_client import Counter

from meshkit import metrics
from meshkit.errors import Aborted, FailedPrecondition

log = logging.getLogger("meshkit.idempotency")

IN_PROGRESS_REASON = "IDEMPOTENCY_KEY_IN_PROGRESS"
REUSED_REASON = "IDEMPOTENCY_KEY_REUSED"

# Valkey trouble (connection refused, timeout, OOM, read-only replica...): degrade, never fail.
VALKEY_ERRORS = (valkey_errors.ValkeyError, OSError, asyncio.TimeoutError)

idempotency_store_degraded_total = Counter(
    "idempotency_store_degraded_total",
    "Idempotency store operations that fell back to the database layer because Valkey failed.",
    ["service", "operation"],
)

_COMPARE_AND_EXPIRE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# Completed entries overwrite our own marker, a missing one (expired or flushed), or nothing else:
# a marker written by a newer attempt is left alone (that attempt will write the same outcome,
# because the outcome itself comes from the database).
_COMPLETE = """
local current = redis.call('GET', KEYS[1])
if current == false or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""


class KeyInProgress(Aborted):
    reason = IN_PROGRESS_REASON

    def __init__(self, key: str) -> None:
        super().__init__(
            "a request with this idempotency key is still being processed; retry later",
            metadata={"idempotency_key": key},
        )


class KeyReused(FailedPrecondition):
    reason = REUSED_REASON

    def __init__(self, key: str) -> None:
        super().__init__(
            "this idempotency key was already used with a different request body",
            metadata={"idempotency_key": key},
        )


@dataclasses.dataclass(frozen=True)
class Replay:
    """A completed entry with the same request hash: answer with `response` unchanged."""

    response: bytes


class Lease:
    """The right to process one key, until completed, released or expired."""

    def __init__(self, store: IdempotencyStore | None, name: str, value: str) -> None:
        self._store = store
        self.name = name
        self._value = value
        self.token = json.loads(value)["t"] if value else ""

    @property
    def degraded(self) -> bool:
        """True when Valkey could not be used: the database layer alone guards the key."""
        return self._store is None

    async def renew(self) -> bool:
        if self._store is None:
            return False
        return await self._store._renew(self.name, self._value)

    async def release(self) -> None:
        if self._store is not None:
            await self._store._release(self.name, self._value)

    async def complete(self, response: bytes, request_hash: str) -> None:
        if self._store is not None:
            await self._store._complete(self.name, self._value, response, request_hash)

    @contextlib.asynccontextmanager
    async def keep_alive(self) -> AsyncIterator[None]:
        """Renew the lease every third of its period while the body runs."""
        if self._store is None:
            yield
            return
        async with keep_renewing(
            self.renew, self._store.lease_seconds / 3, name=f"idempotency-renew:{self.name}"
        ):
            yield


@contextlib.asynccontextmanager
async def keep_renewing(
    renew: Callable[[], Awaitable[object]], interval: float, *, name: str
) -> AsyncIterator[None]:
    """Call `renew()` every `interval` seconds in a background task while the block runs, and stop
    that task cleanly when the block ends (however it ends). For leases: the Valkey processing
    marker here, the order row's lease in order_svc. `renew` should swallow its own transient errors.

    A flag, not only cancel(), ends the loop: a client may turn a cancellation that races its I/O
    into an error of its own (valkey-py: a socket read timeout becomes TimeoutError), which a renew
    that swallows "store down" errors then eats, and the loop would renew forever."""
    stop = asyncio.Event()

    async def renew_forever() -> None:
        while not stop.is_set():
            await asyncio.sleep(interval)
            if not stop.is_set():
                await renew()

    task = asyncio.create_task(renew_forever(), name=name)
    try:
        yield
    finally:
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class IdempotencyStore:
    def __init__(
        self,
        client: valkey_asyncio.Valkey,
        *,
        namespace: str,
        service: str,
        lease_seconds: float = 30.0,
        completed_ttl_seconds: int = 86_400,
    ) -> None:
        self._client = client
        self._namespace = namespace
        self._service = service
        self.lease_seconds = lease_seconds
        self._completed_ttl = completed_ttl_seconds
        self._expire_script = client.register_script(_COMPARE_AND_EXPIRE)
        self._delete_script = client.register_script(_COMPARE_AND_DELETE)
        self._complete_script = client.register_script(_COMPLETE)

    def key_name(self, scope: str, key: str) -> str:
        return f"idem:{self._namespace}:{scope}:{key}"

    async def begin(self, scope: str, key: str, request_hash: str) -> Lease | Replay:
        """Claim `key` for this request, or return the stored response, or raise IN_PROGRESS/REUSED."""
        name = self.key_name(scope, key)
        value = json.dumps({"s": "processing", "h": request_hash, "t": uuid.uuid4().hex})
        try:
            for _ in range(3):
                if await self._client.set(name, value, nx=True, px=int(self.lease_seconds * 1000)):
                    return Lease(self, name, value)
                raw = await self._client.get(name)
                if raw is None:  # expired between SET and GET: try again
                    continue
                entry = _decode(raw)
                if entry is None:
                    # unreadable leftover: drop it, try again. Only that value: a plain DEL also
                    # removed the lease another request set after our GET, and both went on
                    await self._delete_script(keys=[name], args=[raw])
                    continue
                if entry.get("h") != request_hash:
                    raise KeyReused(key)
                if entry.get("s") == "completed":
                    metrics.idempotent_replays_total.labels(self._service, "valkey").inc()
                    return Replay(base64.b64decode(entry["r"]))
                raise KeyInProgress(key)
        except VALKEY_ERRORS as exc:
            self._degraded("begin", exc)
        return Lease(None, name, "")

    async def remember(self, scope: str, key: str, request_hash: str, response: bytes) -> None:
        """Store a completed entry found by the database layer (Valkey was flushed or down)."""
        await self._complete(self.key_name(scope, key), "", response, request_hash)

    async def _renew(self, name: str, value: str) -> bool:
        try:
            return bool(await self._expire_script(keys=[name], args=[value, int(self.lease_seconds * 1000)]))
        except VALKEY_ERRORS as exc:
            self._degraded("renew", exc)
            return False

    async def _release(self, name: str, value: str) -> None:
        try:
            await self._delete_script(keys=[name], args=[value])
        except VALKEY_ERRORS as exc:
            self._degraded("release", exc)

    async def _complete(self, name: str, value: str, response: bytes, request_hash: str) -> None:
        entry = json.dumps({"s": "completed", "h": request_hash, "r": base64.b64encode(response).decode()})
        try:
            await self._complete_script(keys=[name], args=[value, entry, self._completed_ttl])
        except VALKEY_ERRORS as exc:
            self._degraded("complete", exc)

    def _degraded(self, operation: str, exc: BaseException) -> None:
        idempotency_store_degraded_total.labels(self._service, operation).inc()
        log.warning(
            "idempotency store unavailable; relying on the database layer",
            extra={"operation": operation, "error": repr(exc)[:200]},
        )


def _decode(raw: Any) -> dict[str, Any] | None:
    try:
        entry = json.loads(raw)
    except (ValueError, TypeError):
        return None
    return entry if isinstance(entry, dict) and entry.get("s") in ("processing", "completed") else None
