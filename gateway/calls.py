"""One request's calls to Triton, and its CPU work in the gateway's threads.

Each Triton call holds one of the gateway's fair slots for its model (the tenant's share, gateway/fair_queue.py)
and is bounded by the request's deadline; each piece of CPU work (decoding, pitch, reconciliation) holds one of
the gateway's fair CPU slots while it runs. The audio analysis (pipeline.py) and AnalyzeText both call through it.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Protocol

from toneserve.contract import Code, ToneserveError
from toneserve.gateway.backend import CALL_MODEL


class Slots(Protocol):
    def __getitem__(self, model: str, /) -> contextlib.AbstractAsyncContextManager:
        """A slot of `model`'s calls (fair_queue.TenantPools)."""
        ...


class TritonCalls:
    def __init__(self, slots: Slots, request_id: str,
                 deadline: float | None, on_call: Callable[[int], object] | None = None,
                 cpu: contextlib.AbstractAsyncContextManager | None = None):
        """`slots[model]`: a slot of that model's calls (the tenant's view of the pools); `deadline`:
        time.monotonic() by which the answer is due (None: none); `on_call(+1 / -1)`: the in-flight gauge;
        `cpu`: a slot of the gateway's CPU work (None: unbounded)."""
        self.slots = slots
        self.request_id = request_id
        self.deadline = deadline
        self.on_call = on_call
        self.cpu = cpu

    def timeout(self) -> float | None:
        """Seconds left to the deadline; DEADLINE_EXCEEDED once it has passed."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ToneserveError(Code.DEADLINE_EXCEEDED, "the request's deadline passed during analysis")
        return left

    async def __call__(self, method, *args):
        """`method(*args, request_id=, timeout=)`: one Backend call (named in backend.CALL_MODEL), in a slot of
        its model and within the deadline."""
        async with self.slots[CALL_MODEL[method.__name__]]:
            if self.on_call:
                self.on_call(1)
            try:
                return await method(*args, request_id=self.request_id, timeout=self.timeout())
            finally:
                if self.on_call:
                    self.on_call(-1)

    def cpu_slot(self) -> contextlib.AbstractAsyncContextManager:
        """A slot of the gateway's CPU work, for work that runs in a thread of the caller's choosing."""
        return self.cpu if self.cpu is not None else contextlib.nullcontext()

    async def compute(self, function, *args):
        """`function(*args)` in a worker thread (asyncio's default pool), holding a CPU slot while it runs."""
        async with self.cpu_slot():
            return await asyncio.to_thread(function, *args)
