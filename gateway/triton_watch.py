"""Follows Triton's readiness, so that the gateway's health says what it can serve.

A task polls Triton (`probe`) every `interval` seconds. After `failures` failed probes in a row
Triton counts as down: `on_change(False)` turns the gateway's gRPC health to NOT_SERVING (load
balancers and orchestrators take the replica out) and `ready` is False, which the service reads to
refuse new requests at once with TRITON_UNAVAILABLE and a retry hint instead of letting them time
out one Triton call at a time. One good probe and it is back: `on_change(True)`, SERVING, no
restart. Requests already in progress are not touched: their Triton calls fail or succeed on
their own, each request still gets exactly one answer.

Before that, the gateway must have read the models' configs from Triton once (`load_until_ready`): it
listens and answers NOT_SERVING meanwhile, trying again with a backoff, so that a gateway started
before Triton (a first apply, a Triton outage while a replica restarts) waits instead of exiting.

With several Triton replicas behind --triton-url, each probe goes to one replica that the channel's
round robin holds connected, so "Triton is down" means no replica answers: one replica lost takes
the gateway out of no load balancer while another serves.
"""
from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from toneserve.gateway.tasks import cancel

log = logging.getLogger("toneserve.gateway")


class TritonWatch:
    def __init__(self, probe: Callable[[float], Awaitable[bool]], on_change: Callable[[bool], Awaitable[None]],
                 interval: float = 1.0, failures: int = 2):
        """`probe(timeout)`: True when Triton is ready; `failures`: failed probes in a row that mean down
        (one slow answer under heavy load is not an outage)."""
        self.probe = probe
        self.on_change = on_change
        self.interval = interval
        self.failures = failures
        self.ready = True  # the gateway starts only once Triton served its model configs
        self._announced = True  # the state on_change last took without failing
        self._failed = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="triton-watch")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    async def poll(self) -> None:
        """One probe, and the change of state it may bring."""
        ok = await self.probe(max(self.interval, 1.0))
        self._failed = 0 if ok else self._failed + 1
        if ok and not self.ready:
            self.ready = True
            log.warning("Triton is ready again: serving")
        elif self.ready and self._failed >= self.failures:
            self.ready = False
            log.warning("Triton is not ready (%d probes failed): NOT_SERVING until it is", self._failed)
        if self._announced != self.ready:  # a callback that failed is tried again at the next poll
            await self.on_change(self.ready)
            self._announced = self.ready

    async def _run(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception as exc:  # the watcher must outlive any one failed probe or callback
                log.error("Triton readiness probe failed: %s", exc, exc_info=exc)
            await asyncio.sleep(self.interval)


# Waits between tries to load from Triton: the first, doubling up to the cap (each drawn with jitter).
FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 30.0


def backoff(attempt: int, first: float = FIRST_RETRY_SECONDS, cap: float = MAX_RETRY_SECONDS,
            rng: random.Random | None = None) -> float:
    """Seconds to wait after failed try `attempt` (0 for the first): `first` doubling each try up to `cap`,
    drawn between half of it and all of it, so that replicas started together do not ask Triton in step."""
    ceiling = min(cap, first * 2 ** min(attempt, 32))
    return (rng or random).uniform(ceiling / 2, ceiling)


async def load_until_ready(load: Callable[[], Awaitable[None]], what: str, attempt_seconds: float,
                           on_failure: Callable[[], None] = lambda: None) -> int:
    """Await `load()` until it succeeds, each try given up after `attempt_seconds`, with `backoff` between
    tries; each failure is logged once, with the wait before the next try, and `on_failure()` is called.
    Returns how many tries failed. Cancelling it (the gateway stopping) ends it at once."""
    attempt = 0
    while True:
        try:
            async with asyncio.timeout(attempt_seconds):
                await load()
            return attempt
        except Exception as exc:  # whatever went wrong, the gateway stays up, says why and tries again
            reason = str(exc) or f"no answer within {attempt_seconds:g} s"
            delay = backoff(attempt)
            attempt += 1
            log.warning("cannot load the models from %s (try %d: %s); NOT_SERVING, trying again in %.1f s",
                        what, attempt, reason, delay)
            on_failure()
            await asyncio.sleep(delay)
