"""meshkit's LeaderLease against real PostgreSQL: one holder of the advisory lock at a time, and only
the holder is told it leads (the outbox relay, recovery, archival and catalog jobs rely on it)."""

from __future__ import annotations

import uuid

from meshkit.outbox import LeaderLease


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
    finally:
        await first.release()
        await second.release()
