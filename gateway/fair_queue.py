"""Slots shared fairly between tenants: the Triton calls of each model, and the gateway's own CPU work.

The gateway keeps at most `capacity` calls in flight to each model (a `FairPools` of one `FairSlots` per
model, sized by default to the runs Triton computes of that model at once), and at most one piece of CPU work
(decoding, pitch, reconciliation) per core in its worker threads. With one FIFO of waiting calls a
tenant whose request fans out into many calls (short emotion windows, many channels) would hold
every slot, and everyone else's calls would wait behind all of its own. Here each tenant has its
own FIFO, and a freed slot goes to the waiting tenant that used the fewest slots lately for its
weight: each slot granted counts 1, decaying with a time constant of USAGE_SECONDS. Tenants that
keep calls waiting so share the slots in proportion to their weights (w slots to a tenant of weight
w for each slot to one of weight 1, whatever the number of calls each has queued, the longest
unserved first among equals), and a tenant that used less than its share lately goes first: a quiet
tenant's calls wait for the next slot to free, not behind a flooding tenant's queue. A slot is
granted at once while none is waiting, so an idle gateway adds no delay. The order only matters
where calls wait in the gateway: slots near what the server runs at once keep the queue here, not
in Triton's FIFO.

Single event loop only (asyncio): no locks, every method runs on the loop.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

# The time constant (s) of the decay of a tenant's slot count: how long its past use keeps it behind others.
USAGE_SECONDS = 10.0


class FairSlots:
    def __init__(self, capacity: int, weight: Callable[[str], float] = lambda tenant: 1.0):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.free = capacity
        self.weight = weight
        self.queues: dict[str, deque[asyncio.Future]] = {}  # tenants with calls waiting, FIFO each
        self.usage: dict[str, float] = {}  # slots granted lately, decayed to `_stamp`
        self._stamp = time.monotonic()

    def tenant(self, tenant: str) -> "TenantSlots":
        """`async with slots.tenant(name):` holds one slot for the block."""
        return TenantSlots(self, tenant)

    def waiting(self, tenant: str | None = None) -> int:
        """Calls waiting for a slot: of one tenant, or of all."""
        if tenant is not None:
            return len(self.queues.get(tenant, ()))
        # Read by /metrics on its HTTP thread while the loop adds and removes tenants: a snapshot.
        return sum(len(q) for q in list(self.queues.values()))

    async def acquire(self, tenant: str) -> None:
        if self.free > 0 and not self.queues:
            self.free -= 1
            self._decay()
            self._count(tenant)
            return
        waiter = asyncio.get_running_loop().create_future()
        self.queues.setdefault(tenant, deque()).append(waiter)
        self._dispatch()  # slots may be free (the queue was just opened by a cancelled waiter's tenant)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just as the caller gave up: pass the slot on
            else:
                self._withdraw(tenant, waiter)
            raise

    def resize(self, capacity: int) -> None:
        """Hold at most `capacity` slots from now on: more are granted at once to calls waiting; fewer take
        effect as calls in flight end."""
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.free += capacity - self.capacity
        self.capacity = capacity
        self._dispatch()

    def release(self) -> None:
        self.free += 1
        if self.free > self.capacity:
            raise RuntimeError("FairSlots released more often than acquired")
        self._dispatch()

    def _dispatch(self) -> None:
        if self.free > 0 and self.queues:
            self._decay()  # once: the grants below happen at the same moment
        while self.free > 0 and self.queues:
            tenant = self._next()
            queue = self.queues[tenant]
            waiter = queue.popleft()
            if not queue:
                del self.queues[tenant]
            if waiter.done():  # cancelled, its task not yet resumed to withdraw it: the slot goes on
                continue
            self.free -= 1
            self._count(tenant)
            waiter.set_result(None)

    def _next(self) -> str:
        """The waiting tenant whose turn it is: the fewest slots lately for its weight; among equals (as
        counted, decay included) the one served longest ago, or the first to wait. Counts decayed to now."""
        return min(self.queues, key=lambda tenant: self.usage.get(tenant, 0.0) / max(self.weight(tenant), 1e-3))

    def _decay(self) -> None:
        now = time.monotonic()
        factor = math.exp(-(now - self._stamp) / USAGE_SECONDS)
        self._stamp = now
        for tenant, used in list(self.usage.items()):
            if used * factor < 1e-3:
                del self.usage[tenant]  # long idle: counts as never served
            else:
                self.usage[tenant] = used * factor

    def _count(self, tenant: str) -> None:
        """One slot granted to `tenant` now (the counts decayed to now)."""
        self.usage[tenant] = self.usage.get(tenant, 0.0) + 1.0

    def _withdraw(self, tenant: str, waiter: asyncio.Future) -> None:
        queue = self.queues.get(tenant)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self.queues[tenant]


class TenantSlots:
    """One tenant's view of the slots: an async context manager holding one slot."""

    def __init__(self, slots: FairSlots, tenant: str):
        self.slots = slots
        self.tenant = tenant

    async def __aenter__(self) -> None:
        await self.slots.acquire(self.tenant)

    async def __aexit__(self, *exc) -> None:
        self.slots.release()


class FairPools:
    """A FairSlots per name (the gateway keeps one per model Triton serves), each made on first use with
    `capacity(name)` slots: a tenant waits for the model its call needs, never behind calls to another."""

    def __init__(self, capacity: Callable[[str], int], weight: Callable[[str], float] = lambda tenant: 1.0):
        self.capacity = capacity
        self.weight = weight
        self.pools: dict[str, FairSlots] = {}

    def __getitem__(self, name: str) -> FairSlots:
        pool = self.pools.get(name)
        if pool is None:
            pool = self.pools[name] = FairSlots(self.capacity(name), self.weight)
        return pool

    def tenant(self, tenant: str) -> "TenantPools":
        return TenantPools(self, tenant)

    def waiting(self, tenant: str | None = None) -> int:
        """Calls waiting for a slot, in every pool: of one tenant, or of all."""
        return sum(pool.waiting(tenant) for pool in list(self.pools.values()))

    def resize(self) -> None:
        """Size every pool made so far again, by `capacity(name)`."""
        for name, pool in list(self.pools.items()):
            pool.resize(self.capacity(name))


class TenantPools:
    """One tenant's view of the pools: `async with pools[name]:` holds one slot of pool `name`."""

    def __init__(self, pools: FairPools, tenant: str):
        self.pools = pools
        self.tenant = tenant

    def __getitem__(self, name: str) -> TenantSlots:
        return self.pools[name].tenant(self.tenant)
