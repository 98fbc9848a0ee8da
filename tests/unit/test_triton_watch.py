"""The Triton watcher: down after consecutive failed probes, back after one good one, each change told once."""
from __future__ import annotations

import asyncio

from toneserve.gateway.triton_watch import TritonWatch


def test_readiness_changes_are_reported_once_each_way():
    answers = iter([True, False, True, False, False, False, True, True])
    changes: list[bool] = []

    async def probe(timeout: float) -> bool:
        return next(answers)

    async def on_change(ready: bool) -> None:
        changes.append(ready)

    async def scenario() -> list[bool]:
        watch = TritonWatch(probe, on_change, interval=0.01, failures=2)
        seen = []
        for _ in range(8):
            await watch.poll()
            seen.append(watch.ready)
        return seen

    seen = asyncio.run(scenario())
    # one failed probe is not an outage; two in a row are; one good probe ends it
    assert seen == [True, True, True, True, False, False, True, True]
    assert changes == [False, True]


def test_the_watch_task_survives_a_failing_probe_and_stops_cleanly():
    calls = 0

    async def probe(timeout: float) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("boom")
        return False

    async def on_change(ready: bool) -> None:
        pass

    async def scenario() -> TritonWatch:
        watch = TritonWatch(probe, on_change, interval=0.001, failures=2)
        watch.start()
        while calls < 4:
            await asyncio.sleep(0.001)
        await watch.stop()
        return watch

    assert asyncio.run(scenario()).ready is False


def test_a_failed_health_update_is_tried_again_at_the_next_poll():
    answers = iter([False, False, False, False])
    changes: list[bool] = []
    attempts = 0

    async def probe(timeout: float) -> bool:
        return next(answers)

    async def on_change(ready: bool) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("health servicer busy")
        changes.append(ready)

    async def scenario() -> None:
        watch = TritonWatch(probe, on_change, interval=0.01, failures=2)
        await watch.poll()
        try:
            await watch.poll()  # down: the first announcement fails
        except RuntimeError:
            pass
        assert watch.ready is False  # requests are refused at once all the same
        await watch.poll()  # still down: announced now
        await watch.poll()  # and only once

    asyncio.run(scenario())
    assert changes == [False]
