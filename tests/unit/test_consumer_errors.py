"""Which consumer errors are of the moment (retry the batch) and which mean the record cannot be
applied (parked in dead_letters after a few attempts)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from meshkit.consumer import is_transient
from meshkit.errors import Unavailable


@pytest.mark.parametrize(
    "error",
    [
        Unavailable("database unavailable"),
        psycopg.OperationalError("connection lost"),
        psycopg.InterfaceError("the connection is closed"),
        errors.AdminShutdown(),
        errors.DeadlockDetected(),
        errors.SerializationFailure(),
        errors.LockNotAvailable(),
        errors.TooManyConnections(),
        ConnectionResetError(),
        TimeoutError(),
    ],
)
def test_errors_of_the_moment_retry_the_batch(error) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("not an event"),
        KeyError("field"),
        errors.UniqueViolation(),
        errors.InvalidTextRepresentation(),
        errors.NumericValueOutOfRange(),
        RuntimeError("a bug"),
    ],
)
def test_errors_of_the_record_park_it(error) -> None:
    assert not is_transient(error)
