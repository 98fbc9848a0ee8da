"""One request's calls to Triton: each holds one of the gateway's fair Triton slots (the tenant's share)
and is bounded by the request's deadline. The audio analysis (pipeline.py) and AnalyzeText both call
through it."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from toneserve.contract import Code, ToneserveError


class TritonCalls:
    def __init__(self, slots: contextlib.AbstractAsyncContextManager, request_id: str, deadline: float | None,
                 on_call: Callable[[int], object] | None = None):
        """`deadline`: time.monotonic() by which the answer is due (None: none); `on_call(+1 / -1)`: the
        in-flight gauge."""
        self.slots = slots
        self.request_id = request_id
        self.deadline = deadline
        self.on_call = on_call

    def timeout(self) -> float | None:
        """Seconds left to the deadline; DEADLINE_EXCEEDED once it has passed."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ToneserveError(Code.DEADLINE_EXCEEDED, "the request's deadline passed during analysis")
        return left

    async def __call__(self, method, *args):
        """`method(*args, request_id=, timeout=)`: one Backend call, in a slot and within the deadline."""
        async with self.slots:
            if self.on_call:
                self.on_call(1)
            try:
                return await method(*args, request_id=self.request_id, timeout=self.timeout())
            finally:
                if self.on_call:
                    self.on_call(-1)
