"""Which consumer errors are of the moment (retry the batch) and which mean the record cannot be
applied (parked in dead_letters after a few attempts)."""

from __future__ import annotations

import psycopg
import pytest
from kafka.errors import CommitFailedError, RebalanceInProgressError
from psycopg import errors

from meshkit.consumer import DedupConsumer, is_transient
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


class _RebalancingConsumer:
    """Stands in for KafkaConsumer at the moment the group rebalances: commit() is refused."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.lag_read = False

    def commit(self) -> None:
        raise self.error

    def assignment(self) -> set:
        self.lag_read = True
        return set()


@pytest.mark.parametrize("error", [CommitFailedError("rebalanced"), RebalanceInProgressError()])
def test_a_commit_refused_by_a_rebalance_does_not_crash_the_consumer(error) -> None:
    """It crashed the consumer, whose rebuild left and joined the group again: rebalance storms."""
    consumer = DedupConsumer(bootstrap="127.0.0.1:9", topics=["t"], group_id="g", pool=None, handler=None)
    consumer._consumer = _RebalancingConsumer(error)
    consumer._commit_and_report_lag()  # no exception: the next poll rejoins
    assert consumer._consumer.lag_read is False
