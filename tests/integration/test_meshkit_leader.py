"""meshkit's LeaderLease against real PostgreSQL: one holder of the advisory lock at a time, and only
the holder is told it leads (the outbox relay, recovery, archival and catalog jobs rely on it)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

from meshkit.outbox import LEASE_PING_TIMEOUT_SECONDS, LeaderLease


async def test_only_the_lock_holder_leads_and_a_follower_takes_over_when_it_lets_go(test_database):
    name = f"leader-test:{uuid.uuid4()}"
    first, second = LeaderLease(test_database, name), LeaderLease(test_database, name)
    try:
        assert await first.acquire()
        assert not await second.acquire()
        # the follower's refused try left its connection open: that is no lock (it used to read as
        # leadership one pass later, so every replica relayed the outbox)
        assert not await second.still_held()
        assert not await second.still_held(within=60)
        assert await first.still_held() and await first.still_held(within=60)

        await first.release()
        assert not await first.still_held()
        assert await second.acquire() and await second.still_held()
        assert not await first.acquire()
        # a release hands over at once (it unlocks before closing; the close alone freed the lock
        # only once the server had ended the session, and a follower's try just then was refused)
        for _ in range(20):
            await second.release()
            assert await first.acquire()
            first, second = second, first
    finally:
        await first.release()
        await second.release()


async def test_a_leader_whose_session_stops_answering_steps_down(test_database):
    """The lock's backend stops answering (as over a half-open connection): the ping gives up after
    LEASE_PING_TIMEOUT_SECONDS instead of blocking the relay for as long as the kernel keeps trying,
    and the session carries server-side keepalives so the server drops it (and the lock) too."""
    name = f"leader-test:{uuid.uuid4()}"
    lease, follower = LeaderLease(test_database, name), LeaderLease(test_database, name)
    try:
        assert await lease.acquire()
        conn = lease._conn
        assert (await (await conn.execute("SHOW tcp_keepalives_idle")).fetchone())[0] == "10"
        backend = (await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0]
        os.kill(backend, signal.SIGSTOP)
        try:
            started = time.monotonic()
            # wait_for: without its own timeout the ping would block here for good (fail, not hang)
            assert not await asyncio.wait_for(lease.still_held(), 30)
            # the ping's timeout, then psycopg's own try to cancel the query (up to 5 s): bounded
            assert time.monotonic() - started < LEASE_PING_TIMEOUT_SECONDS + 5 + 8
        finally:
            os.kill(backend, signal.SIGCONT)  # it finds its client gone and ends, freeing the lock
        deadline = time.monotonic() + 10
        while not await follower.acquire():
            assert time.monotonic() < deadline, "the stalled leader's lock was never freed"
            await asyncio.sleep(0.2)
    finally:
        await lease.release()
        await follower.release()
