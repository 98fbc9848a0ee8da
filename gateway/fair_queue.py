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

Where the models' runs share one machine's cores (the cpu profile), the pools of the long audio models share a
budget too (`SharedBudget`): a call is granted a slot of its model only while the budget has one left, and a
slot freed in any of them goes to the waiting tenant whose turn it is across those models. A quiet tenant's call
to one model so waits for the next run of either to end, never behind a flooding tenant's call that holds its
model's slot while it waits for the budget, and no more runs compute at once than the models were tuned for.

Single event loop only (asyncio): no locks, every method runs on the loop.
"""
from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import deque
from collections.abc import Callable

# Orders every waiting call of every pool: among one tenant's calls waiting for the budget, the first to wait goes
# first whatever its model.
_ARRIVAL = itertools.count()

# The time constant (s) of the decay of a tenant's slot count: how long its past use keeps it behind others.
USAGE_SECONDS = 10.0


class FairSlots:
    def __init__(self, capacity: int, weight: Callable[[str], float] = lambda tenant: 1.0,
                 budget: "SharedBudget | None" = None):
        """`budget`: slots this pool shares with others (a grant takes one of each); None: this pool's only."""
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.free = capacity
        self.weight = weight
        self.budget = budget
        if budget is not None:
            budget.members.append(self)
        # tenants with calls waiting, FIFO each: (arrival, future)
        self.queues: dict[str, deque[tuple[int, asyncio.Future]]] = {}
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
        if self._grantable() and not self.queues and (self.budget is None or not self.budget.waiting()):
            self._take(tenant)
            return
        waiter = asyncio.get_running_loop().create_future()
        self.queues.setdefault(tenant, deque()).append((next(_ARRIVAL), waiter))
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
        if self.budget is not None:
            self.budget.free += 1
        self._dispatch()

    def _grantable(self) -> bool:
        return self.free > 0 and (self.budget is None or self.budget.free > 0)

    def _take(self, tenant: str) -> None:
        """One slot (and one of the budget) granted to `tenant` now."""
        self.free -= 1
        self._decay()
        self._count(tenant)
        if self.budget is not None:
            self.budget.free -= 1
            self.budget._decay()
            self.budget._count(tenant)

    def _dispatch(self) -> None:
        if self.budget is not None:  # whose turn it is is decided across the budget's pools
            self.budget._dispatch()
            return
        if self._grantable() and self.queues:
            self._decay()  # the counts decayed to now, for `_next`
        while self._grantable() and self.queues:
            self._grant(self._next())

    def _grant(self, tenant: str) -> None:
        """The first waiting call of `tenant` gets a slot (passed on where it was cancelled meanwhile)."""
        queue = self.queues[tenant]
        _, waiter = queue.popleft()
        if not queue:
            del self.queues[tenant]
        if waiter.done():  # cancelled, its task not yet resumed to withdraw it: the slot goes on
            return
        self._take(tenant)
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
        entry = next((entry for entry in queue or () if entry[1] is waiter), None)
        if queue is not None and entry is not None:
            queue.remove(entry)
            if not queue:
                del self.queues[tenant]


class SharedBudget(FairSlots):
    """Slots shared by several pools (`members`, each made with `budget=` this): nobody waits on it directly; a
    call waits in its model's pool, and is granted where both have a slot. Its usage counts are the tenants'
    grants in all its pools, so whose turn it is is decided across them."""

    def __init__(self, capacity: int, weight: Callable[[str], float] = lambda tenant: 1.0):
        super().__init__(capacity, weight)
        self.members: list[FairSlots] = []

    def waiting(self, tenant: str | None = None) -> int:
        return sum(pool.waiting(tenant) for pool in list(self.members))

    def _dispatch(self) -> None:
        """Grant while the budget has slots: to the waiting tenant (of a pool with a slot free) with the fewest
        grants lately for its weight, its call that waited longest."""
        while self.free > 0:
            # tenant -> (the arrival of its first call waiting in a pool with a slot free, that pool)
            heads: dict[str, tuple[int, FairSlots]] = {}
            for pool in self.members:
                if pool.free > 0:
                    for tenant, queue in pool.queues.items():
                        if tenant not in heads or queue[0][0] < heads[tenant][0]:
                            heads[tenant] = (queue[0][0], pool)
            if not heads:
                return
            self._decay()
            tenant = min(heads, key=lambda t: (self.usage.get(t, 0.0) / max(self.weight(t), 1e-3), heads[t][0]))
            heads[tenant][1]._grant(tenant)


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
    `capacity(name)` slots: a tenant waits for the model its call needs, never behind calls to another. The
    pools of the names `shares(name)` also share a budget of `total()` slots (None: no budget), sized on first
    use too."""

    def __init__(self, capacity: Callable[[str], int], weight: Callable[[str], float] = lambda tenant: 1.0,
                 total: Callable[[], int | None] = lambda: None, shares: Callable[[str], bool] = lambda name: False):
        self.capacity = capacity
        self.weight = weight
        self.total = total
        self.shares = shares
        self.pools: dict[str, FairSlots] = {}
        self.budget: SharedBudget | None = None
        self._budget_sized = False

    def __getitem__(self, name: str) -> FairSlots:
        pool = self.pools.get(name)
        if pool is None:
            budget = self._budget() if self.shares(name) else None
            pool = self.pools[name] = FairSlots(self.capacity(name), self.weight, budget)
        return pool

    def _budget(self) -> SharedBudget | None:
        if not self._budget_sized:
            size = self.total()
            self.budget = SharedBudget(size, self.weight) if size is not None else None
            self._budget_sized = True
        return self.budget

    def tenant(self, tenant: str) -> "TenantPools":
        return TenantPools(self, tenant)

    def waiting(self, tenant: str | None = None) -> int:
        """Calls waiting for a slot, in every pool: of one tenant, or of all."""
        return sum(pool.waiting(tenant) for pool in list(self.pools.values()))

    def resize(self) -> None:
        """Size every pool made so far again, by `capacity(name)`, and the budget by `total()` (one that was
        not made stays unmade; None then: as many as its pools hold)."""
        for name, pool in list(self.pools.items()):
            pool.resize(self.capacity(name))
        if self.budget is not None:
            size = self.total()
            self.budget.resize(size if size is not None else sum(pool.capacity for pool in self.budget.members))


class TenantPools:
    """One tenant's view of the pools: `async with pools[name]:` holds one slot of pool `name`."""

    def __init__(self, pools: FairPools, tenant: str):
        self.pools = pools
        self.tenant = tenant

    def __getitem__(self, name: str) -> TenantSlots:
        return self.pools[name].tenant(self.tenant)
