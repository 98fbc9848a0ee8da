"""Tenant quotas shared through a store (gateway/quota.py's SharedQuotas): the keys and their expiry, two
replicas sharing a tenant's count, and the fallback to the replica's own counters while the store is down,
with a store that fails on demand; then the same over a real redis-server (RedisStore), killed and
restarted."""
from __future__ import annotations

import asyncio
import logging

import pytest

from tests.support import redis_server
from toneserve.gateway.quota import (
    Allowance,
    QuotaExceeded,
    Quotas,
    RedisStore,
    SharedQuotas,
    StoreUnavailable,
    check_store_url,
    describe,
    key_ttl,
    store_key,
    window_index,
)

T0 = 86400.0 * 20_000 + 3600.0 + 20.0  # 01:00:20 UTC: 20 s into a minute, an hour into a day


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeStore:
    """A dict with Redis's semantics for what SharedQuotas uses; `down` makes every call fail."""

    def __init__(self):
        self.values: dict[str, float] = {}
        self.ttls: dict[str, int] = {}
        self.down = False
        self.calls: list[str] = []

    def _answer(self, call: str) -> None:
        self.calls.append(call)
        if self.down:
            raise StoreUnavailable("ConnectionError: refused")

    async def read(self, keys):
        self._answer("read")
        return [self.values.get(key, 0.0) for key in keys]

    async def add(self, increments):
        self._answer("add")
        for key, seconds, ttl in increments:
            self.values[key] = self.values.get(key, 0.0) + seconds
            self.ttls[key] = ttl

    async def ping(self):
        self._answer("ping")

    async def close(self):
        pass


def replica(store, clock, allowance=Allowance(per_minute=60.0), **kwargs) -> tuple[SharedQuotas, list]:
    states: list = []
    quotas = SharedQuotas(store, Quotas(lambda tenant: allowance, clock), "the test store",
                          on_state=states.append, on_fallback=lambda op: states.append(op), **kwargs)
    return quotas, states


async def settle(*quotas: SharedQuotas) -> None:
    """The background charges done."""
    for q in quotas:
        if q.charging:
            await asyncio.wait(set(q.charging))


def test_keys_name_the_tenant_and_window_and_expire_a_minute_after_it():
    minute, day = window_index("minute", T0), window_index("day", T0)
    assert (minute, day) == (math_floor(T0 / 60), 20_000)
    assert store_key("acme", "minute", minute) == f"toneserve:quota:acme:m:{minute}"
    assert store_key("acme", "day", day) == "toneserve:quota:acme:d:20000"
    assert key_ttl("minute", minute, T0) == 40 + 60  # 40 s left in the minute, then the grace
    assert key_ttl("day", day, T0) == 86400 - 3620 + 60
    assert key_ttl("minute", minute - 5, T0) == 1  # a past window is never kept forever (nor 0: no expiry)


def math_floor(x: float) -> int:
    import math
    return math.floor(x)


def test_store_urls():
    assert check_store_url("redis://10.0.0.5:6379/2") == "redis://10.0.0.5:6379/2"
    assert check_store_url("rediss://user:secret@cache.internal:6380")
    for wrong in ("10.0.0.5:6379", "http://cache:6379", "redis://", "redis://cache:port", "redis://cache:6379/x"):
        with pytest.raises(ValueError):
            check_store_url(wrong)
    assert describe("redis://user:secret@cache:6379/0") == "redis://***@cache:6379/0"
    with pytest.raises(ValueError) as error:
        check_store_url("http://user:secret@cache:6379")
    assert "secret" not in str(error.value)


def test_two_replicas_share_a_tenant_count_and_the_refusal_hints_the_window_end():
    async def run():
        store, clock = FakeStore(), Clock(T0)
        (one, up_one), (two, _) = replica(store, clock), replica(store, clock)
        await one.start()
        await two.start()
        assert up_one == [True]
        await one.check("acme")
        one.charge("acme", 45.0)
        await settle(one)
        await two.check("acme")  # 45 < 60
        two.charge("acme", 20.0)
        await settle(two)
        with pytest.raises(QuotaExceeded) as error:
            await one.check("acme")  # 65 s counted in the store, 45 of them by `one`
        assert error.value.retry_after_ms == 40_000 and "65.0 s" in error.value.message
        assert one.local.usage("acme", "minute") == 45.0  # its own counters, charged all along
        key = store_key("acme", "minute", window_index("minute", T0))
        assert store.values[key] == 65.0 and store.ttls[key] == 100
        clock.now += 40.0  # the next minute: a new key
        await one.check("acme")
    asyncio.run(run())


def test_a_tenant_without_quota_costs_no_read_but_is_still_charged():
    async def run():
        store, clock = FakeStore(), Clock(T0)
        quotas, _ = replica(store, clock, Allowance())
        await quotas.start()
        await quotas.check("globex")
        quotas.charge("globex", 5.0)
        quotas.charge("globex", 0.0)  # nothing
        await settle(quotas)
        assert store.calls == ["ping", "add"]
        assert store.values[store_key("globex", "day", 20_000)] == 5.0
    asyncio.run(run())


def test_store_down_counts_alone_says_so_once_and_goes_back_with_the_charges_kept(caplog):
    async def run():
        store, clock = FakeStore(), Clock(T0)
        other, _ = replica(store, clock)
        quotas, states = replica(store, clock, retry_seconds=0.05)
        await quotas.start()
        other.charge("acme", 50.0)  # another replica's charge, in the store
        await settle(other)
        quotas.charge("acme", 5.0)
        await settle(quotas)
        store.down = True
        await quotas.check("acme")  # fails over: this replica's own 5 s, admitted
        assert not quotas.up and states == [True, False, "check"]
        for _ in range(3):
            quotas.charge("acme", 20.0)  # kept for the store
        with pytest.raises(QuotaExceeded):
            await quotas.check("acme")  # 65 s counted alone: refused by its own counters
        reads = store.calls.count("read")
        await quotas.check("globex")
        assert store.calls.count("read") == reads  # a store known to be down is not asked
        clock.now += 60.0  # a minute later: the kept minute is past, the day is not
        await asyncio.sleep(0.2)
        assert not quotas.up  # still down: pinged, not back
        store.down = False
        for _ in range(100):
            if quotas.up:
                break
            await asyncio.sleep(0.02)
        assert quotas.up and states[-1] is True and states.count(False) == 1
        assert states.count("charge") == 3
        day = store_key("acme", "day", 20_000)
        assert store.values[day] == 50.0 + 5.0 + 60.0  # the day's outage charges added
        past_minute = store_key("acme", "minute", window_index("minute", T0))
        assert store.values[past_minute] == 55.0  # the past minute's were dropped
        assert quotas.pending == {}
        quotas.charge("acme", 1.0)  # back to the store
        await settle(quotas)
        assert store.values[day] == 116.0
        await quotas.close()
    with caplog.at_level(logging.INFO, logger="toneserve.gateway"):
        asyncio.run(run())
    lines = [r.getMessage() for r in caplog.records if "the test store" in r.getMessage()]
    assert len([line for line in lines if "unreachable" in line]) == 1, lines
    assert len([line for line in lines if "is back" in line]) == 1, lines
    assert "60.0 s" in lines[-1]


def test_a_charge_that_fails_is_kept_and_the_store_down_at_start_is_no_error():
    async def run():
        store, clock = FakeStore(), Clock(T0)
        store.down = True
        quotas, states = replica(store, clock, retry_seconds=0.05)
        await quotas.start()  # serves anyway
        assert states == [False] and not quotas.up
        store.down = False
        for _ in range(100):
            if quotas.up:
                break
            await asyncio.sleep(0.02)
        assert quotas.up
        store.down = True
        quotas.charge("acme", 7.0)  # sent while up; fails in the background
        await settle(quotas)
        assert not quotas.up and states[-2:] == [False, "charge"]
        assert sum(seconds for _, _, seconds in quotas.pending.values()) == 14.0  # minute and day
        await quotas.close()  # stops pinging
        assert quotas.probe is not None and quotas.probe.done()
    asyncio.run(run())


# --------------------------------------------------------------------------- a real redis-server

def test_redis_store_charges_with_expiry_fails_fast_when_killed_and_reconnects(tmp_path):
    with redis_server(tmp_path) as server:
        client = server.client()

        async def run() -> None:
            store = RedisStore(server.url)
            try:
                await store.add([("toneserve:quota:acme:m:1", 2.5, 90), ("toneserve:quota:acme:d:1", 2.5, 900)])
                await store.add([("toneserve:quota:acme:m:1", 1.25, 90)])
                keys = ["toneserve:quota:acme:m:1", "toneserve:quota:acme:d:1", "nothing"]
                assert await store.read(keys) == [3.75, 2.5, 0.0]
                assert 80 < client.ttl("toneserve:quota:acme:m:1") <= 90
                assert 890 < client.ttl("toneserve:quota:acme:d:1") <= 900
                server.kill()
                started = asyncio.get_running_loop().time()
                with pytest.raises(StoreUnavailable):
                    await store.read(keys)
                with pytest.raises(StoreUnavailable):
                    await store.ping()
                assert asyncio.get_running_loop().time() - started < 1.0
                server.start()  # the same port, empty (nothing saved): the same store works again at once
                await store.add([("toneserve:quota:acme:m:1", 1.0, 90)])
                assert await store.read(keys) == [1.0, 0.0, 0.0]
                server.kill()  # restarted between two calls, none failed: its pooled connection is stale
                server.start()
                assert await store.read(keys) == [0.0, 0.0, 0.0]
            finally:
                await store.close()

        try:
            asyncio.run(run())
        finally:
            client.close()


def test_redis_store_unreachable_from_the_start_is_store_unavailable():
    from toneserve.triton import free_port

    async def run():
        store = RedisStore(f"redis://127.0.0.1:{free_port()}")
        try:
            with pytest.raises(StoreUnavailable):
                await store.ping()
        finally:
            await store.close()
    asyncio.run(run())
