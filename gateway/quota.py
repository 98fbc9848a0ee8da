"""Per-tenant quotas on audio seconds, per minute and per day.

Every request is charged the audio it had decoded when it ended, whatever the outcome: a request
that fails half way (a model error, a deadline, the client going away) still cost the models its
first half. A tenant whose usage in the current window has reached its quota is refused at
admission with QUOTA_EXCEEDED and a retry hint: the time until that window ends.

Windows are fixed (the current UTC minute, the current UTC day), so the hint is exact and the
state is two counters per tenant. A request in progress is charged when it ends, so a tenant can
go past its quota by what its requests in progress decode; the next request is then refused.

Without a store the counters live in this gateway process (`Quotas`): with N replicas behind a load
balancer a tenant can use up to N times its quota (each replica counts only what it served).

With a store (`--quota-store redis://HOST:PORT[/DB]`: `SharedQuotas` over a `RedisStore`) the replicas
share the counters: one key per tenant and window, `toneserve:quota:<tenant>:m:<minute index>` and
`toneserve:quota:<tenant>:d:<day index>` (the index: seconds since the epoch // the window's length),
each increased by INCRBYFLOAT and given an expiry (the end of its window plus a minute) in one
MULTI/EXEC transaction when a request ends, and read with one MGET at admission. Each call to the
store is given up after a short timeout (0.25 s), so the event loop never waits long on it; a charge
is sent in the background, after the answer.

When the store fails (refused, timed out, any Redis error) the gateway goes on serving: it counts
with its own counters alone (`Quotas`, which are charged all along, so they hold what this replica
served in the current windows), logs one line, sets toneserve_quota_store_up to 0, counts each check
or charge made without the store (toneserve_quota_store_fallbacks_total), and pings the store once a
second in the background; requests never wait on a store known to be down. When it answers again:
one log line, the gauge back to 1, and the charges made in the meantime whose windows are still
current are added to the store (an outage's charges still count towards the day; past minutes are
dropped). A charge whose answer timed out after the store had applied it is then counted twice: the
error is on the tenant's side of its quota, never on the side of serving more than was sold.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from toneserve.contract import Code, ToneserveError

log = logging.getLogger("toneserve.gateway")

WINDOWS = (("minute", 60.0), ("day", 86400.0))
KEY_PREFIX = "toneserve:quota"
# A window's key outlives the window by this much, so replicas whose clocks differ by less still agree.
KEY_GRACE_SECONDS = 60.0
STORE_TIMEOUT_SECONDS = 0.25
STORE_RETRY_SECONDS = 1.0
STORE_SCHEMES = ("redis", "rediss")
ENV_QUOTA_STORE = "TONESERVE_QUOTA_STORE"


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


def refuse_over(tenant: str, allowance: Allowance, usage: Callable[[str], float], now: float) -> None:
    """QuotaExceeded, with the time until its window ends, when `usage(window)` has reached its limit."""
    for window, length in WINDOWS:
        limit = allowance.limit(window)
        if limit is not None and (used := usage(window)) >= limit:
            raise QuotaExceeded(tenant, window, used, limit, (math.floor(now / length) + 1) * length - now)


def window_index(window: str, now: float) -> int:
    return math.floor(now / dict(WINDOWS)[window])


class Quotas:
    """This replica's own counters."""

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
        refuse_over(tenant, self.allowance(tenant), lambda window: self.usage(tenant, window), self.clock())

    def charge(self, tenant: str, seconds: float) -> None:
        if seconds <= 0:
            return
        windows = self.used.setdefault(tenant, {})
        for window, _ in WINDOWS:
            windows[window] = (self._index(window), self.usage(tenant, window) + seconds)

    def _index(self, window: str) -> int:
        return window_index(window, self.clock())


# --------------------------------------------------------------------------- shared through a store

def store_key(tenant: str, window: str, index: int) -> str:
    """The store's key of a tenant's window: toneserve:quota:acme:m:29012345 (m: minute, d: day)."""
    return f"{KEY_PREFIX}:{tenant}:{window[0]}:{index}"


def key_ttl(window: str, index: int, now: float) -> int:
    """Seconds the key of window `index` is kept from `now`: to the window's end plus KEY_GRACE_SECONDS."""
    length = dict(WINDOWS)[window]
    return max(1, math.ceil((index + 1) * length + KEY_GRACE_SECONDS - now))


def describe(url: str) -> str:
    """The URL without its credentials, for logs and errors."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


def check_store_url(url: str) -> str:
    """The URL, if it names a Redis store (redis://HOST:PORT[/DB], rediss:// for TLS); else ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in STORE_SCHEMES or not parts.hostname:
        raise ValueError(f"--quota-store takes redis://HOST:PORT[/DB] (rediss:// for TLS), got {describe(url)!r}")
    try:
        parts.port  # noqa: B018 (a port out of range or not a number raises)
    except ValueError:
        raise ValueError(f"--quota-store {describe(url)!r}: the port is not a number from 0 to 65535") from None
    database = parts.path.strip("/")
    if database and not database.isdigit():
        raise ValueError(f"--quota-store {describe(url)!r}: the database is a number (redis://HOST:PORT/0)")
    return url


class StoreUnavailable(Exception):
    """The store did not answer (refused, timed out) or answered with an error."""


class QuotaStore(Protocol):
    async def read(self, keys: Sequence[str]) -> list[float]: ...

    async def add(self, increments: Sequence[tuple[str, float, int]]) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class RedisStore:
    """The counters in Redis (redis-py's asyncio client): MGET to read; INCRBYFLOAT and EXPIRE, for each
    (key, seconds, ttl), in one MULTI/EXEC to charge. Each call is given up after `timeout` s and never
    retried here (the caller falls back); every failure is StoreUnavailable."""

    def __init__(self, url: str, timeout: float = STORE_TIMEOUT_SECONDS):
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as Closed

        self.url = check_store_url(url)
        self.timeout = timeout
        # One retry, at once, of a connection found closed (a pooled connection to a Redis since restarted);
        # none of a timeout, which would only double the wait on a store that does not answer.
        self.client = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                              retry=Retry(NoBackoff(), 1, supported_errors=(Closed,)))

    async def _call(self, work: Awaitable):
        from redis.exceptions import RedisError

        try:
            # redis-py's timeouts cover the socket; this one the whole call (connecting, a stuck read).
            return await asyncio.wait_for(work, 2 * self.timeout)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            # Its pooled connections go too: once the store is back, every call starts on a fresh one.
            with contextlib.suppress(RedisError, OSError):
                await self.client.connection_pool.disconnect()
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc

    async def read(self, keys: Sequence[str]) -> list[float]:
        values = await self._call(self.client.mget(list(keys)))
        return [float(value) if value is not None else 0.0 for value in values]

    async def add(self, increments: Sequence[tuple[str, float, int]]) -> None:
        async def transaction() -> None:
            async with self.client.pipeline(transaction=True) as pipe:
                for key, seconds, ttl in increments:
                    pipe.incrbyfloat(key, seconds)
                    pipe.expire(key, ttl)
                await pipe.execute()
        await self._call(transaction())

    async def ping(self) -> None:
        await self._call(self.client.ping())

    async def close(self) -> None:
        await self.client.aclose()


class SharedQuotas:
    """Tenants' quotas checked and charged in a store the replicas share, with `local` (this replica's own
    counters, charged all along) standing in while the store is down (the module's docstring)."""

    def __init__(self, store: QuotaStore, local: Quotas, name: str = "the quota store",
                 on_state: Callable[[bool], None] = lambda up: None,
                 on_fallback: Callable[[str], None] = lambda op: None,
                 retry_seconds: float = STORE_RETRY_SECONDS):
        """`on_state(up)`: told the store's state at start and each change of it; `on_fallback(op)`: told of
        each "check" or "charge" made without the store."""
        self.store = store
        self.local = local
        self.name = name
        self.on_state = on_state
        self.on_fallback = on_fallback
        self.retry_seconds = retry_seconds
        self.up = True
        # Charges made while the store was down: key -> (window, index, seconds), added once it is back.
        self.pending: dict[str, tuple[str, int, float]] = {}
        self.charging: set[asyncio.Task] = set()
        self.probe: asyncio.Task | None = None

    async def start(self) -> None:
        """Asks the store once: up, or down from the start (counted alone until it answers)."""
        try:
            await self.store.ping()
        except StoreUnavailable as exc:
            self._down(exc)
        else:
            log.info("tenant quotas shared through %s", self.name)
            self.on_state(True)

    async def check(self, tenant: str) -> None:
        """QuotaExceeded when one of the tenant's windows, as the store counts it, is used up; while the
        store is down, as this replica counts it."""
        allowance = self.local.allowance(tenant)
        windows = [window for window, _ in WINDOWS if allowance.limit(window) is not None]
        if not windows:
            return
        if self.up:
            now = self.local.clock()
            try:
                used = await self.store.read([store_key(tenant, w, window_index(w, now)) for w in windows])
            except StoreUnavailable as exc:
                self._down(exc)
            else:
                refuse_over(tenant, allowance, dict(zip(windows, used)).__getitem__, now)
                return
        self.on_fallback("check")
        self.local.check(tenant)

    def charge(self, tenant: str, seconds: float) -> None:
        """Charged at once to the local counters; to the store in the background (the answer does not wait
        for it), or kept for it while it is down."""
        if seconds <= 0:
            return
        self.local.charge(tenant, seconds)
        now = self.local.clock()
        increments = [(window, window_index(window, now), seconds) for window, _ in WINDOWS]
        if not self.up:
            self._keep(tenant, increments)
            return
        task = asyncio.get_running_loop().create_task(self._add(tenant, increments))
        self.charging.add(task)
        task.add_done_callback(self.charging.discard)

    async def _add(self, tenant: str, increments: list[tuple[str, int, float]]) -> None:
        now = self.local.clock()
        try:
            await self.store.add([(store_key(tenant, w, i), s, key_ttl(w, i, now)) for w, i, s in increments])
        except StoreUnavailable as exc:
            self._down(exc)
            self._keep(tenant, increments)

    def _keep(self, tenant: str, increments: list[tuple[str, int, float]]) -> None:
        self.on_fallback("charge")
        for window, index, seconds in increments:
            key = store_key(tenant, window, index)
            self.pending[key] = (window, index, self.pending.get(key, (window, index, 0.0))[2] + seconds)

    def _down(self, exc: StoreUnavailable) -> None:
        if not self.up:
            return
        self.up = False
        log.warning("%s is unreachable (%s): quotas are counted by this replica alone until it answers again",
                    self.name, exc)
        self.on_state(False)
        if self.probe is None or self.probe.done():
            self.probe = asyncio.get_running_loop().create_task(self._wait_for_store())

    async def _wait_for_store(self) -> None:
        """Pings the store each `retry_seconds` until it answers, adds the charges kept meanwhile whose
        windows are still current, and goes back to it."""
        while True:
            await asyncio.sleep(self.retry_seconds)
            added = 0.0
            try:
                await self.store.ping()
                while True:  # until nothing is kept: what was kept while one `add` ran goes in the next
                    now = self.local.clock()
                    self.pending = {key: e for key, e in self.pending.items() if e[1] == window_index(e[0], now)}
                    if not self.pending:
                        break
                    kept = dict(self.pending)
                    await self.store.add([(key, s, key_ttl(w, i, now)) for key, (w, i, s) in kept.items()])
                    for key, (window, index, seconds) in kept.items():
                        left = self.pending[key][2] - seconds
                        if left > 1e-9:
                            self.pending[key] = (window, index, left)
                        else:
                            del self.pending[key]
                    added += sum(seconds for window, _, seconds in kept.values() if window == "day")
            except StoreUnavailable:
                continue
            self.up = True  # no await since `pending` was found empty: nothing is left behind
            log.warning("%s is back: quotas are shared again (%.1f s of audio charged meanwhile added "
                        "to it)", self.name, added)
            self.on_state(True)
            return

    async def close(self) -> None:
        """Waits briefly for the charges under way, stops pinging, closes the store."""
        if self.charging:
            await asyncio.wait(set(self.charging), timeout=4 * STORE_TIMEOUT_SECONDS)
        if self.probe is not None:
            self.probe.cancel()
            await asyncio.gather(self.probe, return_exceptions=True)
        await self.store.close()
