"""The AuditService servicer every service registers for its own schema (admin-only by the proto)."""

from __future__ import annotations

import base64
import datetime as dt

import grpc
from google.protobuf import struct_pb2
from psycopg_pool import AsyncConnectionPool
from shop.audit.v1 import audit_pb2, audit_pb2_grpc

from meshkit.audit import list_records
from meshkit.db import connection
from meshkit.errors import InvalidArgument

MAX_PAGE = 500
MAX_FILTER_LENGTH = 512


def encode_cursor(occurred_at: dt.datetime, record_id: int) -> str:
    return base64.urlsafe_b64encode(f"{occurred_at.isoformat()}|{record_id}".encode()).decode()


def decode_cursor(token: str) -> tuple[dt.datetime, int]:
    try:
        when, record_id = base64.urlsafe_b64decode(token.encode()).decode().split("|")
        return dt.datetime.fromisoformat(when), int(record_id)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("page_token", "is not a token this service issued") from None


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def ListAuditRecords(
        self, request: audit_pb2.ListAuditRecordsRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.ListAuditRecordsResponse:
        if request.page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        for name in ("resource", "actor"):
            value = getattr(request, name)
            # PostgreSQL text cannot hold NUL: the query itself failed (INTERNAL) before this check
            if "\x00" in value or len(value) > MAX_FILTER_LENGTH:
                raise InvalidArgument(name, f"at most {MAX_FILTER_LENGTH} characters, no NUL")
        size = min(request.page_size or 50, MAX_PAGE)
        before = decode_cursor(request.page_token) if request.page_token else None
        async with connection(self._pool) as conn:
            rows = await list_records(
                conn, resource=request.resource, actor=request.actor, before=before, limit=size + 1
            )
        records = []
        for row in rows[:size]:
            changes = struct_pb2.Struct()
            changes.update(row["changes"])
            record = audit_pb2.AuditRecord(
                id=row["id"],
                service=row["service"],
                actor=row["actor"],
                actor_roles=row["actor_roles"],
                action=row["action"],
                resource=row["resource"],
                request_id=row["request_id"],
                trace_id=row["trace_id"],
                changes=changes,
                page_token_after=encode_cursor(row["occurred_at"], row["id"]),
            )
            record.occur_time.FromDatetime(row["occurred_at"])
            records.append(record)
        next_token = records[-1].page_token_after if len(rows) > size else ""
        return audit_pb2.ListAuditRecordsResponse(records=records, next_page_token=next_token)


def register_audit_service(
    server: grpc.aio.Server, pool: AsyncConnectionPool, service_names: list[str]
) -> None:
    audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(pool), server)
    service_names.append(audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name)


AUDIT_SERVICE_DESCRIPTOR = audit_pb2.DESCRIPTOR.services_by_name["AuditService"]
