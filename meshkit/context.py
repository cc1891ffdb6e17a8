"""Per-request context carried through asyncio tasks: request id and the calling principal."""

from __future__ import annotations

import contextvars
import dataclasses
import os

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling: a user (JWT `sub` relayed by the gateway), an admin, or a named job/service."""

    subject: str
    roles: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def is_service(self) -> bool:
        return "service" in self.roles


principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


def new_request_id() -> str:
    # the same 32 hex digits as uuid4().hex from the same source, without building a UUID per call
    return os.urandom(16).hex()


def current_principal() -> Principal | None:
    return principal_var.get()
