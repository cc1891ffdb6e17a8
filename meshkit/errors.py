"""Domain errors and their one mapping to gRPC status with google.rpc.ErrorInfo / BadRequest details.

Services raise these from the service layer; the server interceptor turns them into a rich status.
The gateway maps the gRPC code plus the ErrorInfo reason to HTTP (see gateway/errors.py).
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "shopmesh.dev"


class DomainError(Exception):
    """Base for expected failures. `reason` is an UPPER_SNAKE ErrorInfo reason."""

    code: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION
    reason: str = "FAILED_PRECONDITION"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}


class InvalidArgument(DomainError):
    """Bad input; `field` names the offending request field."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str, **kwargs: object) -> None:
        super().__init__(f"{field}: {message}", **kwargs)  # type: ignore[arg-type]
        self.field = field
        self.description = message


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    code = grpc.StatusCode.ABORTED
    reason = "ABORTED"


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"


def to_status(error: DomainError) -> grpc.Status:
    """Build the rich status (code, message, ErrorInfo, and BadRequest for invalid arguments)."""
    details = []
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata)
    packed = any_pb2.Any()
    packed.Pack(info)
    details.append(packed)
    if isinstance(error, InvalidArgument):
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.description)
            ]
        )
        packed_bad = any_pb2.Any()
        packed_bad.Pack(bad)
        details.append(packed_bad)
    status = status_pb2.Status(code=error.code.value[0], message=error.message, details=details)
    return rpc_status.to_status(status)


def status_of(rpc_error: grpc.RpcError) -> status_pb2.Status | None:
    """The rich google.rpc.Status of a failed call (sync or aio), if the server sent one."""
    trailing = rpc_error.trailing_metadata() or ()  # type: ignore[attr-defined]
    for key, value in trailing:
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    return None


def error_info_of(rpc_error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo detail of a failed call, if the server sent one."""
    status = status_of(rpc_error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def internal_status(message: str = "internal error") -> status_pb2.Status:
    return status_pb2.Status(code=code_pb2.INTERNAL, message=message)
