"""Per-tenant quotas on audio seconds, per minute and per day.

Every request is charged the audio it had decoded when it ended, whatever the outcome: a request
that fails half way (a model error, a deadline, the client going away) still cost the models its
first half. A tenant whose usage in the current window has reached its quota is refused at
admission with QUOTA_EXCEEDED and a retry hint: the time until that window ends.

Windows are fixed (the current UTC minute, the current UTC day), so the hint is exact and the
state is two counters per tenant. A request in progress is charged when it ends, so a tenant can
go past its quota by what its requests in progress decode; the next request is then refused.

The counters live in this gateway process: with N replicas behind a load balancer a tenant can
use up to N times its quota (each replica counts only what it served).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from toneserve.contract import Code, ToneserveError

WINDOWS = (("minute", 60.0), ("day", 86400.0))


@dataclass(frozen=True)
class Allowance:
    """A tenant's quotas in audio seconds; None: unlimited."""
    per_minute: float | None = None
    per_day: float | None = None

    def limit(self, window: str) -> float | None:
        return self.per_minute if window == "minute" else self.per_day


class QuotaExceeded(ToneserveError):
    def __init__(self, tenant: str, window: str, used: float, limit: float, retry_after: float):
        self.retry_after_ms = max(1, math.ceil(retry_after * 1000))
        super().__init__(Code.QUOTA_EXCEEDED, f"tenant {tenant!r} has used {used:.1f} s of audio this {window}, "
                                              f"its quota is {limit:g} s; retry in {retry_after:.0f} s")


class Quotas:
    def __init__(self, allowance: Callable[[str], Allowance], clock: Callable[[], float] = time.time):
        self.allowance = allowance
        self.clock = clock
        # tenant -> window -> (index of the window, seconds used in it)
        self.used: dict[str, dict[str, tuple[int, float]]] = {}

    def usage(self, tenant: str, window: str) -> float:
        index, seconds = self.used.get(tenant, {}).get(window, (-1, 0.0))
        return seconds if index == self._index(window) else 0.0

    def check(self, tenant: str) -> None:
        """QuotaExceeded when one of the tenant's windows is used up."""
        allowance = self.allowance(tenant)
        for window, length in WINDOWS:
            limit = allowance.limit(window)
            if limit is not None and self.usage(tenant, window) >= limit:
                now = self.clock()
                raise QuotaExceeded(tenant, window, self.usage(tenant, window), limit,
                                    (math.floor(now / length) + 1) * length - now)

    def charge(self, tenant: str, seconds: float) -> None:
        if seconds <= 0:
            return
        windows = self.used.setdefault(tenant, {})
        for window, _ in WINDOWS:
            windows[window] = (self._index(window), self.usage(tenant, window) + seconds)

    def _index(self, window: str) -> int:
        length = dict(WINDOWS)[window]
        return math.floor(self.clock() / length)
