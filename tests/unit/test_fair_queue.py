"""The fair slots (Triton calls per model, CPU work): no tenant starves another, weights share the slots, cancelled waiters
give nothing away. Deterministic: slots are released one at a time and the order of grants is read."""
from __future__ import annotations

import asyncio

import pytest

from toneserve.gateway import fair_queue
from toneserve.gateway.fair_queue import FairPools, FairSlots


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _grant_order(slots: FairSlots, calls: list[str], cancel: tuple[int, ...] = ()) -> list[str]:
    """Hold every slot, queue `calls` (one tenant name per call) in that order, cancel the calls at
    `cancel`, then free one slot at a time and return which tenant each freed slot went to."""
    for _ in range(slots.capacity):
        await slots.acquire("holder")
    granted: list[str] = []

    async def call(tenant: str) -> None:
        await slots.acquire(tenant)
        granted.append(tenant)

    tasks = [asyncio.create_task(call(tenant)) for tenant in calls]
    await _settle()
    assert slots.waiting() == len(calls)
    for index in cancel:
        tasks[index].cancel()
    await _settle()
    for _ in range(len(calls) - len(cancel)):
        slots.release()
        await _settle()
    assert slots.waiting() == 0 and slots.free == 0
    return granted


def test_a_quiet_tenant_is_not_starved_by_a_noisy_one_queued_before_it():
    granted = asyncio.run(_grant_order(FairSlots(1), ["noisy"] * 20 + ["quiet"] * 3))
    assert granted[:6] == ["noisy", "quiet"] * 3
    assert granted[6:] == ["noisy"] * 17


def test_a_tenant_that_used_fewer_slots_lately_goes_first_and_old_use_is_forgotten(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(fair_queue.time, "monotonic", lambda: clock[0])

    async def scenario(idle_seconds: float) -> list[str]:
        slots = FairSlots(1)
        for _ in range(10):  # the noisy tenant used the slot ten times, nobody waiting
            await slots.acquire("noisy")
            slots.release()
        clock[0] += idle_seconds
        return await _grant_order(slots, ["noisy"] * 5 + ["quiet"] * 3)

    # Just now: the quiet tenant's calls go before the noisy tenant's queue, although queued after it.
    assert asyncio.run(scenario(1.0)) == ["quiet"] * 3 + ["noisy"] * 5
    # Ten time constants later the noisy tenant's use is forgotten: turns alternate, the first to wait first.
    assert asyncio.run(scenario(10 * fair_queue.USAGE_SECONDS))[:6] == ["noisy", "quiet"] * 3


def test_weights_share_the_slots_in_proportion():
    weights = {"gold": 2.0, "bronze": 1.0, "lead": 0.5}
    granted = asyncio.run(_grant_order(FairSlots(1, weights.__getitem__),
                                       ["gold"] * 40 + ["bronze"] * 40 + ["lead"] * 40))
    first = granted[:35]  # while all three still wait: 2 : 1 : 0.5
    assert first.count("gold") == 20 and first.count("bronze") == 10 and first.count("lead") == 5


def test_many_slots_are_shared_per_round_too():
    granted = asyncio.run(_grant_order(FairSlots(4), ["a"] * 12 + ["b"] * 4))
    assert granted[:8].count("b") == 4


def test_a_cancelled_waiter_takes_no_slot_and_its_tenant_leaves_the_round():
    granted = asyncio.run(_grant_order(FairSlots(1), ["a", "b", "a", "c"], cancel=(1,)))
    assert granted == ["a", "c", "a"]


def test_slots_are_granted_at_once_while_none_waits_and_released_on_errors():
    async def scenario():
        slots = FairSlots(2)
        with pytest.raises(ZeroDivisionError):
            async with slots.tenant("t"):
                assert slots.free == 1
                1 / 0
        assert slots.free == 2
        async with slots.tenant("t"), slots.tenant("u"):
            assert slots.free == 0
        assert slots.free == 2
        with pytest.raises(RuntimeError):
            slots.release()
    asyncio.run(scenario())


def test_a_slot_granted_to_a_caller_cancelled_meanwhile_is_passed_on():
    async def scenario():
        slots = FairSlots(1)
        await slots.acquire("holder")
        first = asyncio.create_task(slots.acquire("a"))
        second = asyncio.create_task(slots.acquire("b"))
        await _settle()
        slots.release()  # grants `first`'s future ...
        first.cancel()  # ... which is cancelled before it resumes
        await _settle()
        assert second.done() and slots.free == 0 and slots.waiting() == 0
    asyncio.run(scenario())


def test_a_slot_freed_while_a_cancelled_waiter_has_not_resumed_goes_to_the_next():
    async def scenario():
        slots = FairSlots(1)
        await slots.acquire("holder")
        first = asyncio.create_task(slots.acquire("a"))
        second = asyncio.create_task(slots.acquire("b"))
        await _settle()
        first.cancel()  # cancels `first`'s future at once; the task withdraws it only when it resumes ...
        slots.release()  # ... so this release meets a cancelled future still in the queue
        await _settle()
        assert first.cancelled() and second.done() and not second.cancelled()
        assert slots.free == 0 and slots.waiting() == 0
        slots.release()
        assert slots.free == 1
    asyncio.run(scenario())


def test_waiting_may_be_read_while_the_loop_changes_the_tenants():
    """/metrics reads `waiting()` on the HTTP server's thread while the loop adds and removes tenants."""
    slots = FairSlots(1)

    class Queue(list):
        def __len__(self) -> int:  # the loop's thread, between two steps of the reader's iteration
            slots.queues.setdefault(f"t{len(slots.queues)}", Queue())
            return 1

    slots.queues["a"] = Queue()
    assert slots.waiting() >= 1


def test_a_grown_pool_grants_waiting_calls_at_once_and_a_shrunk_one_as_calls_end():
    async def scenario():
        slots = FairSlots(1)
        await slots.acquire("holder")
        waiters = [asyncio.create_task(slots.acquire(tenant)) for tenant in ("a", "b", "c")]
        await _settle()
        slots.resize(3)  # two more slots: the two first waiters get them now
        await _settle()
        assert [w.done() for w in waiters] == [True, True, False] and slots.free == 0
        slots.resize(1)  # three held, one allowed: the next two releases grant nothing
        for _ in range(2):
            slots.release()
            await _settle()
        assert not waiters[2].done() and slots.free == 0
        slots.release()
        await _settle()
        assert waiters[2].done()
        with pytest.raises(ValueError):
            slots.resize(0)
    asyncio.run(scenario())


def test_each_model_has_its_own_pool_sized_by_its_capacity():
    """A tenant waiting for a full model's slot holds up no call to another model."""
    async def scenario():
        sizes = {"emotion": 1, "asr": 2}
        pools = FairPools(sizes.__getitem__)
        noisy, quiet = pools.tenant("noisy"), pools.tenant("quiet")
        async with noisy["emotion"]:
            waiting = asyncio.create_task(quiet["emotion"].__aenter__())
            await _settle()
            assert not waiting.done() and pools.waiting() == 1 and pools.waiting("quiet") == 1
            async with quiet["asr"], noisy["asr"]:  # the other model's slots are free
                assert pools["asr"].free == 0
        await _settle()
        assert waiting.done() and {name: pool.capacity for name, pool in pools.pools.items()} == {"emotion": 1, "asr": 2}
        sizes.update(emotion=3)
        pools.resize()
        assert pools["emotion"].capacity == 3 and pools["emotion"].free == 2  # quiet's call still holds one
    asyncio.run(scenario())



def test_a_budget_across_models_goes_to_the_tenant_whose_turn_it_is_whatever_the_model():
    """Two models' pools share a budget of 2 runs: a freed run goes to the quiet tenant's call to either model
    before the noisy tenant's calls, and a call waiting for the budget holds no slot of its model meanwhile."""
    async def scenario():
        pools = FairPools({"emotion": 2, "asr": 2, "vad": 1}.__getitem__, total=lambda: 2,
                          shares=lambda name: name != "vad")
        noisy, quiet = pools.tenant("noisy"), pools.tenant("quiet")
        order: list[str] = []

        async def call(view, tenant: str, model: str) -> None:
            async with view[model]:
                order.append(f"{tenant}:{model}")
                await asyncio.sleep(3600)  # held until cancelled

        held = [asyncio.create_task(call(noisy, "noisy", model)) for model in ("emotion", "asr")]
        await _settle()
        budget = pools.budget
        assert budget is not None and budget.free == 0 and pools["emotion"].free == 1  # the budget is spent
        late = [asyncio.create_task(call(noisy, "noisy", "emotion")), asyncio.create_task(call(noisy, "noisy", "asr")),
                asyncio.create_task(call(quiet, "quiet", "asr"))]
        await _settle()
        assert pools.waiting() == 3 and pools.waiting("quiet") == 1
        # a model outside the budget is granted at once
        vad = asyncio.create_task(call(quiet, "quiet", "vad"))
        await _settle()
        assert order[-1] == "quiet:vad"
        held[0].cancel()  # noisy's emotion run ends: the budget's run goes to quiet's asr call, not noisy's emotion
        await _settle()
        assert order[-1] == "quiet:asr" and pools.waiting() == 2
        held[1].cancel()  # noisy's asr run ends: noisy's first waiting call (emotion) goes next
        await _settle()
        assert order[-1] == "noisy:emotion" and pools.waiting() == 1
        late[1].cancel()  # a call cancelled while it waits gives nothing away
        await _settle()
        assert pools.waiting() == 0 and budget.free == 0
        for task in late + [vad]:
            task.cancel()
        await asyncio.gather(*held, *late, vad, return_exceptions=True)
        assert budget.free == 2 and pools["emotion"].free == 2 and pools["asr"].free == 2 and pools["vad"].free == 1
    asyncio.run(scenario())


def test_a_budget_grows_and_shrinks_with_the_replicas():
    async def scenario():
        total = [1]
        pools = FairPools(lambda name: 2, total=lambda: total[0], shares=lambda name: True)
        async with pools.tenant("a")["asr"]:
            waiting = asyncio.create_task(pools.tenant("b")["emotion"].__aenter__())
            await _settle()
            assert not waiting.done()
            total[0] = 2
            pools.resize()
            await _settle()
            assert waiting.done()
        assert pools.budget is not None and pools.budget.free == 1  # b's call still holds one of the two
    asyncio.run(scenario())
