"""Crash failpoints for the fault tests: SHOPMESH_FAILPOINTS=after_order_created,after_commit,...

At an enabled point the process SIGKILLs itself: no cleanup, no finally blocks, no flushed buffers,
exactly like a machine losing power between two steps of the checkout.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("order_svc.failpoints")

# Step boundaries of the checkout (see docs/ARCHITECTURE.md, "Checkout state machine").
KNOWN = frozenset(
    {
        "after_order_created",  # order row + order.created committed; nothing reserved for it yet
        "after_commit",  # inventory committed the reservations; no payment yet
        "after_payment",  # the provider captured; the order is still PENDING
        "after_restock",  # a declined order's stock is back; the order is still PENDING
    }
)


class Failpoints:
    def __init__(self, spec: str) -> None:
        names = {n.strip() for n in spec.split(",") if n.strip()}
        unknown = names - KNOWN
        if unknown:
            raise ValueError(f"unknown failpoints {sorted(unknown)}; known: {sorted(KNOWN)}")
        self._enabled = frozenset(names)

    def hit(self, name: str) -> None:
        if name in self._enabled:
            log.warning("failpoint reached: killing the process", extra={"failpoint": name})
            os.kill(os.getpid(), signal.SIGKILL)
